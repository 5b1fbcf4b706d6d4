from modelrunner.gateway.main import main

main()
