from saas_llm.errors import Forbidden


class InsufficientCredits(Forbidden):
    detail = "Insufficient credits"
    code = "insufficient_credits"
