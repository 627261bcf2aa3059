"""Models as the database knows them: the registry (versions, which one serves, coverage, promotion; no
torch), serving (the one loader of a configured or registered model), evaluation and the re-rank
calibration. The networks themselves are in `ynet_db.nn`."""
