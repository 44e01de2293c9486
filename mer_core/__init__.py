"""mersweep core: data, MR-CCL model, losses and the one training function."""
