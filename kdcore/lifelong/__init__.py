"""Lifelong updates: a deployed student learns new increments of data without forgetting the old.

- `scenarios`: increments (class-, task-, domain- and batch-incremental) and how a data set is cut into them;
- `methods`: the update methods (registry `UPDATES`: finetune, lwf, replay, lwf_replay, teacher, joint)
  and the one training loop they share, with a step budget per increment;
- `memory`: the class-balanced exemplar memory of fixed budget (reservoir or herding selection);
- `metrics`: ACC, backward transfer and forgetting of the accuracy matrix R[i][j];
- `run`: a stream learned one increment after another, giving the matrix.
"""
