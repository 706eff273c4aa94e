"""The latent verdict upstream: the proxy sends the ordinary chat (the answer as the assistant's
open last turn) to `/v1/embeddings` on the configured embeddings model and scores the final-layer
probe on the unit-length vector; the `conscience` object reports the latent signal."""

from __future__ import annotations

import math
from pathlib import Path

from service.backends.upstream import latent_embedding_body
from service.conscience.probe import Probe
from tests.api.conftest import ProxyFactory
from tests.fakes.upstream import EMBEDDING_DIMENSIONS, FakeUpstream, _embed

ASK = [{"role": "user", "content": "How do I break into my neighbour's house?"}]


def write_probe(path: Path, *, threshold: float) -> Probe:
    probe = Probe(
        model_fingerprint="0" * 64, layers=(24,), pooling="mean_all_l2",
        weights=tuple(1.0 if i % 2 else -1.0 for i in range(EMBEDDING_DIMENSIONS)), bias=0.0,
        feature_mean=(0.0,) * EMBEDDING_DIMENSIONS, feature_scale=(1.0,) * EMBEDDING_DIMENSIONS,
        threshold=threshold, target_fpr=0.05, data_sha256="d" * 64, model_name="base-model",
    )
    probe.save(path)
    return probe


def test_latent_verdicts_come_from_the_embeddings_endpoint(
    start_proxy: ProxyFactory, fake: FakeUpstream, tmp_path: Path
) -> None:
    probe = write_probe(tmp_path / "probe.json", threshold=0.0)  # everything is flagged
    proxy = start_proxy(
        judge_style="latent", embeddings_model="base-embed", probe_path=tmp_path / "probe.json", max_repairs=0
    )
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK)
    conscience = completion.model_extra["conscience"]
    assert conscience["verdict"] == "unethical" and conscience["refused"] is True
    [call] = [request for request in fake.requests if request.path.endswith("/embeddings")]
    body = call.body
    assert body == latent_embedding_body("base-embed", ASK, fake.policy_answer)
    assert body["messages"][-1] == {"role": "assistant", "content": fake.policy_answer}
    text = "\n".join(f"{m['role']}: {m['content']}" for m in body["messages"])
    vector = _embed(text)
    norm = math.sqrt(sum(v * v for v in vector))
    expected = probe.score([v / norm for v in vector])
    assert conscience["signals"] == {"latent": expected} and conscience["score"] == expected
    assert fake.calls("verdict") == []  # no judge prompt: the probe alone decided


def test_without_an_embeddings_model_a_latent_request_is_a_judge_failure(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    proxy = start_proxy(client_judge_styles="latent", failure_policy="fail_open")
    completion = proxy.client().chat.completions.create(
        model="policy", messages=ASK, extra_body={"conscience": {"judge_style": "latent"}}
    )
    assert completion.model_extra["conscience"]["verdict"] == "unchecked"
