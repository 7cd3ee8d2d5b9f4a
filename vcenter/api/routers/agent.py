"""Routes the host agents call, each with its host's own token (a host reports only for
itself): task progress and results, VM lifecycle events, full host state, its TLS certificate
from the cluster CA and the CA's certificate and CRL."""

from __future__ import annotations

from typing import Any


from vcenter.api import v1
from vcenter.api.errors import declare
from vcenter.api.deps import AgentHostId, DbDep, SettingsDep, public
from vcenter.core.object_ids import ObjectIdPath
from vcenter.messaging.contracts import HostState, LifecycleEvent, TaskProgress, TaskResult
from vcenter.schemas.agent import HostStateAnswer, LifecycleAnswer, ProgressAnswer, ResultAnswer
from vcenter.schemas.inventory import AgentRegistration, AgentRegistrationAnswer, AgentRegistrationChallenge, AgentRegistrationNonce, HostCertificateIssued, HostCertificateRequest, HostTrustMaterial
from vcenter.services.certificates import host_certificates
from vcenter.services.inventory import hosts, inventory
from vcenter.services.orchestration import reports

router = v1.router(prefix="/api/v1/agent/hosts/{host_id}", tags=["agent"], dependencies=[public("an agent's own host credential, valid for its host only")])
registration = v1.router(prefix="/api/v1/agent", tags=["agent"], dependencies=[public("a one-time registration token and a proof of the agent key")])


@registration.post("/register/challenge", response_model=AgentRegistrationNonce, summary="Agent: a nonce to sign for registration (valid for this registration token, briefly)", responses=declare(401))
@v1.conflicts(False)
def register_challenge(body: AgentRegistrationChallenge, db: DbDep, settings: SettingsDep) -> Any:
    return hosts.registration_challenge(db, settings, body.registration_token)


@registration.post(
    "/register",
    response_model=AgentRegistrationAnswer,
    summary="Agent: register with a one-time token, the libvirt host UUID, its certificate and a signature proving it holds the certificate's key",
    responses=declare(401),
)
def register(body: AgentRegistration, db: DbDep, settings: SettingsDep) -> Any:
    return hosts.register(
        db, settings, body.registration_token, body.host_uuid, body.hostname, nonce=body.nonce, certificate_pem=body.certificate, signature=body.signature, thumbprint=body.thumbprint
    )


@router.post("/tasks/{task_id}/progress", response_model=ProgressAnswer, response_model_exclude_unset=True, summary="Agent: a command started or advanced")
def task_progress(task_id: ObjectIdPath, body: TaskProgress, host_id: AgentHostId, db: DbDep, settings: SettingsDep) -> dict[str, Any]:
    return reports.report_progress(db, inventory.get(db, "host", host_id), task_id, body, settings)


@router.post("/tasks/{task_id}/result", response_model=ResultAnswer, summary="Agent: a command ended")
def task_result(task_id: ObjectIdPath, body: TaskResult, host_id: AgentHostId, db: DbDep) -> dict[str, Any]:
    return reports.report_result(db, inventory.get(db, "host", host_id), task_id, body)


@router.post("/events", response_model=LifecycleAnswer, summary="Agent: VM lifecycle events from libvirt")
def lifecycle_events(body: list[LifecycleEvent], host_id: AgentHostId, db: DbDep) -> dict[str, Any]:
    return {"applied": reports.report_lifecycle(db, inventory.get(db, "host", host_id), body)}


@router.post("/state", response_model=HostStateAnswer, response_model_exclude_unset=True, summary="Agent: full host state; the answer says what the host should provide")
def host_state(body: HostState, host_id: AgentHostId, db: DbDep) -> dict[str, Any]:
    return reports.report_host_state(db, inventory.get(db, "host", host_id), body)


@router.post("/certificate", response_model=HostCertificateIssued, summary="Agent: the host's TLS certificate from the cluster CA, for a CSR of a key made on the host")
def host_certificate(body: HostCertificateRequest, host_id: AgentHostId, db: DbDep, settings: SettingsDep) -> Any:
    return host_certificates.issue(db, settings, inventory.get(db, "host", host_id), body.csr)


@router.get("/pki", response_model=HostTrustMaterial, summary="Agent: the cluster CA's certificate and its current CRL")
def trust_material(host_id: AgentHostId, db: DbDep, settings: SettingsDep) -> Any:
    return host_certificates.trust_material(db, settings)
