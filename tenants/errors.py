from saas_llm.errors import Conflict, NotFound


class OrganizationNotFound(NotFound):
    code = "organization_not_found"

    def __init__(self, organization_id: str):
        super().__init__(f"Organization '{organization_id}' not found")


class TeamNotFound(NotFound):
    code = "team_not_found"

    def __init__(self, team_id: str):
        super().__init__(f"Team '{team_id}' not found")


class KeyNotFound(NotFound):
    code = "key_not_found"

    def __init__(self) -> None:
        super().__init__("API key not found")


class OrganizationExists(Conflict):
    code = "organization_exists"

    def __init__(self, organization_id: str):
        super().__init__(f"Organization '{organization_id}' already exists")


class TeamExists(Conflict):
    code = "team_exists"

    def __init__(self, team_id: str):
        super().__init__(f"Team '{team_id}' already exists")
