"""Student architecture search: distilled students of many architectures, scored on the validation split
under a deployment budget measured in onnxruntime (the search_student stage; Optuna underneath)."""
