"""Models as the database knows them: the registry (versions, which one serves, coverage, promotion),
evaluation and the re-rank calibration. The networks themselves are in `ynet_db.nn`."""
