import logging

logger = logging.getLogger(__name__)


def warm_up_litellm() -> None:
    """Import litellm's Router and tokenizer and count a few tokens, once, at process start."""
    import litellm
    from litellm import Router  # noqa: F401

    try:
        litellm.token_counter(model="gpt-4o-mini", messages=[{"role": "user", "content": "warm up"}])
    except Exception:  # warming up is an optimisation; never fail the boot for it
        logger.warning("litellm warm-up failed", exc_info=True)
