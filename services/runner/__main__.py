from modelrunner.runner.main import main

main()
