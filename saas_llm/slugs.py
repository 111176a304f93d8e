from django.core.validators import RegexValidator

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
SLUG_MAX_LENGTH = 64
slug_validator = RegexValidator(
    SLUG_PATTERN, "must match [a-z0-9][a-z0-9_.-]{0,63} (lowercase letters, digits, '_', '.', '-')", code="invalid_slug"
)
