"""ORM models (SQLAlchemy 2, typed), one module per capability on a shared base.
Plain data: no model ever calls a hypervisor. Importing this package puts every
table into ``Base.metadata`` (the migrations compare against it)."""

from nubis.db.models import metering, monitoring  # noqa: F401 (their tables)
from nubis.db.models.base import Base, UTCDateTime, new_id, utcnow
from nubis.db.models.compute import (
    ConsoleTicket,
    Flavor,
    Instance,
    InstanceStatus,
    KeyPair,
    RuleGroup,
    Snapshot,
    StaleDomain,
)
from nubis.db.models.identity import (
    ApiKey,
    Approval,
    AuditRecord,
    LoginThrottle,
    Membership,
    PasswordHistory,
    PasswordPolicy,
    Project,
    Quota,
    Token,
    UsedSignature,
    User,
)
from nubis.db.models.inventory import Cluster, Host, Zone
from nubis.db.models.network import (
    Network,
    Port,
    PortSecurityGroup,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from nubis.db.models.storage import (
    DiskOffering,
    Image,
    StoragePool,
    Volume,
    VolumeAttachment,
    VolumeSnapshot,
    volume_file_name,
)
from nubis.db.models.tasks import FirstRunStep, Task, TaskStatus

__all__ = [
    "ApiKey",
    "Approval",
    "AuditRecord",
    "Base",
    "Cluster",
    "ConsoleTicket",
    "DiskOffering",
    "FirstRunStep",
    "Flavor",
    "Host",
    "Image",
    "Instance",
    "InstanceStatus",
    "KeyPair",
    "LoginThrottle",
    "Membership",
    "Network",
    "PasswordHistory",
    "PasswordPolicy",
    "Port",
    "PortSecurityGroup",
    "Project",
    "Quota",
    "RuleGroup",
    "SecurityGroup",
    "SecurityGroupRule",
    "Snapshot",
    "StaleDomain",
    "StoragePool",
    "Subnet",
    "Task",
    "TaskStatus",
    "Token",
    "UTCDateTime",
    "UsedSignature",
    "User",
    "Volume",
    "VolumeAttachment",
    "VolumeSnapshot",
    "Zone",
    "new_id",
    "utcnow",
    "volume_file_name",
]
