"""The pipeline definition: the one writer of dvc.yaml's derived parts (:mod:`.dvcfile`)."""
