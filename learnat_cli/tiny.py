"""Tiny random Qwen2-architecture models built offline in seconds, for tests and benchmarks.

``build_tiny_model(path)`` trains a small byte-level BPE tokenizer on SQL/English text, gives it Qwen's chat
template and special tokens, and saves a randomly initialised ``Qwen2ForCausalLM`` next to it. The result
loads with ``AutoModelForCausalLM.from_pretrained(path)`` like any hub model.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = """
SELECT name FROM singer WHERE age > 30 ORDER BY name DESC LIMIT 5
SELECT COUNT(*) FROM cards WHERE color = 'R' GROUP BY rarity HAVING COUNT(*) > 1
SELECT T1.name, T2.title FROM author AS T1 JOIN book AS T2 ON T1.id = T2.author_id
SELECT AVG(price), MAX(price), MIN(price), SUM(qty) FROM orders WHERE status IN ('open', 'paid')
SELECT DISTINCT city FROM customers WHERE country LIKE '%land' AND NOT active = 1 OR id BETWEEN 1 AND 9
WITH t AS (SELECT id FROM x) SELECT * FROM t UNION SELECT id FROM y EXCEPT SELECT id FROM z INTERSECT
Step 1: Which cards are red? SQL: Final SQL: Question: Evidence: Database schema: CREATE TABLE
How many singers are older than thirty? What is the average price of the orders? List the names.
You are an expert SQLite assistant. Decompose the user's question into sub-questions.
system user assistant PRIMARY KEY FOREIGN KEY REFERENCES INTEGER TEXT REAL NULL
"""


def build_tiny_model(path: str | Path, *, vocab_size: int = 400, hidden_size: int = 32, layers: int = 2,
                     heads: int = 2, kv_heads: int = 1, seed: int = 0) -> Path:
    """Write a tiny Qwen2 model + tokenizer to ``path`` (created) and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     bos_token=None, unk_token=None,
                                     additional_special_tokens=["<|im_start|>"])
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(path)

    torch.manual_seed(seed)
    eos_id = int(hf_tok.convert_tokens_to_ids("<|im_end|>"))  # type: ignore[arg-type]
    pad_id = int(hf_tok.convert_tokens_to_ids("<|endoftext|>"))  # type: ignore[arg-type]
    cfg = Qwen2Config(vocab_size=len(hf_tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    model.save_pretrained(path)
    return path
