from saas_llm.errors import NotFound


class AliasNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, alias: str):
        super().__init__(f"Model alias '{alias}' not found")


class AccessGroupNotFound(NotFound):
    code = "access_group_not_found"

    def __init__(self, name: str):
        super().__init__(f"Access group '{name}' not found")
