from saas_llm.errors import Conflict, Forbidden, NotFound, UnprocessableRequest


class AliasNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, alias: str):
        super().__init__(f"Model alias '{alias}' not found")


class AccessGroupNotFound(NotFound):
    code = "access_group_not_found"

    def __init__(self, name: str):
        super().__init__(f"Access group '{name}' not found")


class AliasExists(Conflict):
    code = "model_alias_exists"

    def __init__(self, alias: str):
        super().__init__(f"Model alias '{alias}' already exists")


class AccessGroupExists(Conflict):
    code = "access_group_exists"

    def __init__(self, name: str):
        super().__init__(f"Access group '{name}' already exists")


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"

    def __init__(self, alias: str):
        super().__init__(f"Team is not allowed to use model '{alias}'")


class NoDefaultModel(UnprocessableRequest):
    code = "model_required"

    def __init__(self) -> None:
        super().__init__("No model given and the team has no default model")
