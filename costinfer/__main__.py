from costinfer.cli.app import main

main()
