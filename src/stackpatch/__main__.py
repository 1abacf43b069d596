from stackpatch.cli import main

main()
