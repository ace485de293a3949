from wqcompile.cli import main

main()
