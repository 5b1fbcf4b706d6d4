from modelrunner.store.main import main

main()
