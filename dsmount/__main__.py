from dsmount.cli.main import main

main()
