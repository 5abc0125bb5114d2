"""AWS Bedrock (``--provider bedrock``): the Converse API, from its reference
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html), signed with Signature Version 4
through botocore (the ``bedrock`` extra).

A request goes to ``https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse`` (``--base-url``
replaces the host), signed for the service ``bedrock`` with the credentials of the usual AWS chain (environment,
``AWS_PROFILE``, the shared files, an instance role) and the region of ``[providers.bedrock] region``, else
``AWS_REGION``/``AWS_DEFAULT_REGION``, else the profile's. The neutral chat request becomes ``messages`` of content
blocks, ``system`` blocks, ``inferenceConfig`` (``maxTokens``, ``temperature``, ``topP``, ``stopSequences``) and
``toolConfig``. ``usage.inputTokens`` leaves out the prompt-cache reads and writes (``cacheReadInputTokens``,
``cacheWriteInputTokens``), as Anthropic's does: the three add up to the prompt billed. Throttling is a 429
``ThrottlingException``; a bad key a 403 (``UnrecognizedClientException``, ``InvalidSignatureException``).

Batch inference is not offered: Bedrock's reads its input from and writes its output to S3 buckets the user would have
to name, so ``--mode batch`` on Bedrock is refused (auto chooses online).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from costinfer.backends.base import Backend, Completion
from costinfer.backends.completion import MALFORMED, malformed
from costinfer.errors import ConfigError

_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
         "content_filtered": "content_filter", "guardrail_intervened": "content_filter"}  # fmt: skip
_INFERENCE = {"max_tokens": "maxTokens", "max_completion_tokens": "maxTokens", "temperature": "temperature",
              "top_p": "topP"}  # fmt: skip
_SENT = {"model", "messages", "stop", "tools", "tool_choice", *_INFERENCE}
_NO_CREDENTIALS = (
    "provider 'bedrock' needs AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or "
    "run where an instance role gives them), and a region (AWS_REGION); nothing was read or sent"
)


class BedrockBackend(Backend):
    name: ClassVar[str] = "bedrock"
    api_key_env: ClassVar[str | None] = "AWS_ACCESS_KEY_ID"  # named when the server refuses the credentials
    catalog_prefix: ClassVar[str | None] = "bedrock_converse"
    model_names: ClassVar[str | None] = (
        r"(?:bedrock/)?(?:(?:us|eu|apac|au|jp|global|us-gov)\.)?"
        r"(?:amazon|anthropic|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer)\."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._signer: Any = None

    @property
    def region(self) -> str:
        region = self.config.settings.get("region") or os.environ.get("AWS_REGION")
        region = region or os.environ.get("AWS_DEFAULT_REGION") or self._session().get_config_variable("region")
        if not region:
            raise ConfigError("provider 'bedrock' needs a region: set AWS_REGION (or [providers.bedrock] region)")
        return str(region)

    @property
    def base_url(self) -> str:
        return (self.config.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com").rstrip("/")

    def api_key(self) -> str | None:
        """The access key's id, once the chain has credentials (the secret stays with botocore)."""
        credentials = self._session().get_credentials()
        if credentials is None:
            raise ConfigError(_NO_CREDENTIALS)
        return str(credentials.access_key)

    def headers(self) -> dict[str, str]:
        return {}  # every request is signed on its own (``post``)

    def url_for(self, body: dict[str, Any]) -> str:
        model = str(body.get("model") or "").removeprefix("bedrock/")
        return f"{self.base_url}/model/{quote(model, safe='')}/converse"

    async def post(self, url: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str] | None]:
        """Signed, and sent exactly as signed: the model id's ':' stays %3A (AWS's SDKs send it so, and the path is
        part of the signature; yarl would otherwise decode it)."""
        from yarl import URL

        data = orjson.dumps(payload)
        return await self.transport.send("POST", URL(url, encoded=True), data, self._signed(url, data))

    def _signed(self, url: str, data: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        if self._signer is None:
            credentials = self._session().get_credentials()
            if credentials is None:
                raise ConfigError(_NO_CREDENTIALS)
            self._signer = SigV4Auth(credentials.get_frozen_credentials(), "bedrock", self.region)
        request = AWSRequest(method="POST", url=url, data=data, headers={"content-type": "application/json"})
        self._signer.add_auth(request)
        return dict(request.headers.items())

    def _session(self) -> Any:
        try:
            import botocore.session
        except ImportError as exc:
            raise ConfigError(
                "provider 'bedrock' signs its requests with botocore: pip install 'costinfer[bedrock]'"
            ) from exc
        return botocore.session.get_session()

    @classmethod
    def drops(cls, body: dict[str, Any]) -> list[str]:
        return sorted(k for k in body if k not in _SENT)

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        return converse_request(body)

    def parse(self, raw: bytes) -> Completion:
        return parse_converse(raw)


def converse_request(body: dict[str, Any]) -> dict[str, Any]:
    """The neutral chat request in Converse's shape."""
    system: list[dict[str, str]] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role, text = message.get("role"), _text(message.get("content"))
        if role in ("system", "developer"):
            system.append({"text": text})
        elif role == "tool":
            block = {"toolResult": {"toolUseId": message.get("tool_call_id") or "tool", "content": [{"text": text}]}}
            messages.append({"role": "user", "content": [block]})
        else:
            messages.append({"role": "assistant" if role == "assistant" else "user", "content": [{"text": text}]})
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config = {theirs: body[ours] for ours, theirs in _INFERENCE.items() if body.get(ours) is not None}
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        out["inferenceConfig"] = config
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
    if tools:
        out["toolConfig"] = {"tools": [
            {"toolSpec": {"name": f["name"], "description": f.get("description") or f["name"],
                          "inputSchema": {"json": f.get("parameters") or {"type": "object"}}}}
            for f in tools
        ]}  # fmt: skip
    return out


def parse_converse(raw: bytes) -> Completion:
    try:
        data = orjson.loads(raw)
        usage = data["usage"]
        blocks = data["output"]["message"]["content"]
        texts = [str(b["text"]) for b in blocks if "text" in b]
        uses = [b["toolUse"] for b in blocks if "toolUse" in b]
        read, written = int(usage.get("cacheReadInputTokens") or 0), int(usage.get("cacheWriteInputTokens") or 0)
        return Completion(
            text="".join(texts) if texts or not uses else orjson.dumps(uses).decode(),
            input_tokens=int(usage["inputTokens"]) + read + written,
            output_tokens=int(usage["outputTokens"]),
            cached_tokens=read,
            cache_write_tokens=written,
            finish_reason=_STOP.get(str(data.get("stopReason")), "stop"),
        )
    except MALFORMED as exc:
        raise malformed(raw, exc) from exc


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)
