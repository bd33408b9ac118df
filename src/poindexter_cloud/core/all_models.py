"""Imports every module's tables so Alembic and tests see the whole schema."""

from poindexter_cloud.accounts import models as accounts_models
from poindexter_cloud.billing import models as billing_models
from poindexter_cloud.core import models as core_models
from poindexter_cloud.core.db import Base
from poindexter_cloud.identity import models as identity_models
from poindexter_cloud.webhooks import models as webhooks_models

__all__ = ["Base", "accounts_models", "billing_models", "core_models", "identity_models", "webhooks_models"]
