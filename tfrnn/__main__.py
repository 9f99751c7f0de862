from tfrnn.cli import main

main()
