"""The embedded engine: a causal LM served in-process (transformers + peft, the `[local]` extra).

Import `service.backends.local.backend.LocalBackend` only when the local backend is chosen: this
package pulls in torch, which the proxy core must not need (docs/architecture.md, invariant 7).
"""
