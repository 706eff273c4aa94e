"""Write a Hugging Face Qwen2 model directory as an F32 GGUF file, as llama.cpp would lay it out.

Tests use it to exercise the GGUF path of the loader without a model hub: tensor names come from
gguf-py's own name map, the tokenizer travels as GPT-2 style BPE metadata with its chat template.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_gguf(model_dir: Path, target: Path) -> Path:
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = model.config
    writer = gguf.GGUFWriter(str(target), "qwen2")
    writer.add_name(model_dir.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pieces = {index: piece for piece, index in spec["model"]["vocab"].items()}
    special = {added["id"] for added in spec["added_tokens"]}
    pieces.update({added["id"]: added["content"] for added in spec["added_tokens"]})
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list([pieces[index] for index in range(len(pieces))])
    writer.add_token_types([
        gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL
        for index in range(len(pieces))
    ])
    writer.add_token_merges([
        merge if isinstance(merge, str) else " ".join(merge) for merge in spec["model"]["merges"]
    ])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_bos_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        module, kind = name.rsplit(".", 1)
        writer.add_tensor(f"{names.get_name(module)}.{kind}", tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
