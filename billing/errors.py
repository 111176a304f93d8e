from saas_llm.errors import Forbidden, NotFound


class InsufficientCredits(Forbidden):
    detail = "Insufficient credits"
    code = "insufficient_credits"


class ReservationNotFound(NotFound):
    code = "reservation_not_found"

    def __init__(self) -> None:
        super().__init__("No reservation for this job")
