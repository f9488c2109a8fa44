"""Many runs of the pipeline's stages: sweeps over params variants and seeds (benchmarks, the methods
comparison). This package sits above `kdcore.stages`, as `kdcore.__main__` does: it runs stages and
reads dvc.yaml for which params and outputs each stage depends on; no stage imports it."""
