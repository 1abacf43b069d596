from pathlib import Path

from stackpatch.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_matches_the_models():
    doc = (ROOT / "docs" / "config.md").read_text()
    assert doc == reference_markdown(), "docs/config.md is stale: run `make docs`"


def test_every_model_field_is_documented():
    doc = reference_markdown()
    for key in ("git.tag_prefix", "registry.password_env", "images.<name>.dockerfile", "target.waves[].services",
                "verify.checks[].body_contains", "migrations.tenants", "cdn.batch_size", "timeouts.converge"):
        assert f"`{key}`" in doc, key
