from modelrunner.distribution.main import main

main()
