"""#Tok with a real (tiny, offline-built) Qwen tokenizer."""

from transformers import AutoTokenizer

from wise_perception.core.tokens import count_tokens, reasoning_tokens


def test_reasoning_tokens_count_the_inner_think_text(tiny_policy_dir):
    tok = AutoTokenizer.from_pretrained(tiny_policy_dir)
    think = " the red square is on the left "
    completion = f"<think>{think}</think><answer>{{}}</answer><d_think> long story </d_think>"
    expected = len(tok.encode(think, add_special_tokens=False))
    assert expected > 3
    assert reasoning_tokens(completion, tok) == expected
    assert reasoning_tokens(completion, tok, span="d_think") == len(
        tok.encode(" long story ", add_special_tokens=False)
    )
    assert reasoning_tokens("<answer>{}</answer>", tok) == 0
    assert count_tokens(None, tok) == 0 and count_tokens("", tok) == 0
