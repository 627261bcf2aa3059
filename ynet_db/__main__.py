from ynet_db.cli import main

main()
