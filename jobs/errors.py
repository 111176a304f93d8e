from saas_llm.errors import ApiError, Conflict, NotFound


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self) -> None:
        super().__init__("Job not found")


class JobAlreadyFinished(Conflict):
    code = "job_already_finished"

    def __init__(self, status: str):
        super().__init__(f"Job is already {status}")


class UpstreamError(ApiError):
    """A provider failure after retries and fallbacks (SPEC §4: 502/503/504/429, or the provider's 400)."""

    def __init__(self, status_code: int, detail: str, code: str, *, retry_after: str | None = None):
        super().__init__(detail, code=code, headers={"Retry-After": retry_after} if retry_after else None)
        self.status_code = status_code
