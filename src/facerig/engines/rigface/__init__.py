"""The RigFace engine (Wei et al.): two SD 1.5 UNets, identity self-attention fusion (docs/rigface.md)."""
