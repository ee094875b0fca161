from srcli.cli import main

main()
