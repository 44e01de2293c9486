"""mersweep core: data, MR-CCL model, losses, and the training recipe with its executors (`train`)."""
