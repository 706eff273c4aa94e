from conscience_cli.main import main

main()
