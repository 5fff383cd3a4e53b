"""Prompt rendering that must not depend on when it runs."""

import pytest

from looper.errors import InputError
from looper.prompts import render_prompt

# What Llama 3.1 / 3.2's templates do with the date: the caller's date_string, else transformers' strftime_now (today)
LLAMA_DATE = (
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    '{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}'
    "{%- endif %}{%- endif %}Today Date: {{ date_string }}\n"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
)
# a template that calls the clock itself, whatever date_string says
CLOCK = '{{ strftime_now("%Y-%m-%d") }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>'


def test_a_template_that_writes_the_date_renders_a_fixed_one(real_tokenizer_dir):
    """Issue 44 (sglang #3296): a prompt rendered on another day (SFT before midnight, eval after) is the same prompt;
    a template whose date cannot be fixed is refused."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    tok.chat_template = LLAMA_DATE
    text = render_prompt(tok, "What is 2 + 2?", "Be brief.", "chat")
    assert "Today Date: 26 Jul 2024\n" in text and text.endswith("<|assistant|>")
    tok.chat_template = CLOCK
    with pytest.raises(InputError, match="writes today's date .* takes no date_string"):
        render_prompt(tok, "What is 2 + 2?", "Be brief.", "chat")
