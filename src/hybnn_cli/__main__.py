from hybnn_cli.cli import main

main()
