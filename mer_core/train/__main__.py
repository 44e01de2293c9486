from mer_core.train.cli import entry

entry()
