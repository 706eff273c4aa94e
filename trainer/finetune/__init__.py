"""The paper's fine-tuning mode: task loss plus the conscience term, registered as a candidate version."""
