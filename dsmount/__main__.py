from dsmount.cli import main

main()
