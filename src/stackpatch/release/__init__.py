"""Plans, steps, the runner and the journal of a release."""
