"""zaqar-grpc: the API gateway and the queue, message and notifier services.

Importing the package first chooses gRPC's I/O path (``services/common/grpc_io.py``), which
gRPC reads once, when it is itself imported.
"""

from services.common.grpc_io import prefer_iomgr

prefer_iomgr()
