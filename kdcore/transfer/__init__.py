"""Transfer sets: the views the student learns from and the teacher's logits on them."""
