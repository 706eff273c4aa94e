"""The nightly DPO run: store → select → dataset → DPO → gate → adapter registry → publish."""
