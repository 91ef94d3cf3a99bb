"""The fake Exchange Web Services endpoint (/EWS/Exchange.asmx): SOAP in, SOAP out.

Answers the operations exchangelib sends for Sightline, in the shapes of
Microsoft's published EWS examples (the `m:`/`t:` namespaces, one
`<Op>ResponseMessage ResponseClass=… ><m:ResponseCode>` per item,
`ServerVersionInfo` in the SOAP header):

    GetFolder            distinguished (root, msgfolderroot, inbox, sentitems, drafts, ...) or by id
    FindFolder           Shallow or Deep under a folder, IndexedPageFolderView paging
    SyncFolderItems      ≤ MaxChangesReturned (≤ 512) Create/Delete changes, SyncState,
                         IncludesLastItemInRange; an unknown state: ErrorInvalidSyncStateData
    GetItem              the requested properties, MimeContent base64; per-item errors
    CreateItem           SaveOnly into Drafts from MimeContent
    SendItem             the draft becomes a new item in Sent Items; local recipients receive it
    FindItem             IsEqualTo message:InternetMessageId in a folder
    Subscribe            StreamingSubscriptionRequest on folders
    GetStreamingEvents   a chunked stream of envelopes, each with ConnectionStatus: OK at
                         once, events as they happen, a keep-alive after `keepalive_seconds`
                         without one (Exchange: OK alone; gromox: OK + a StatusEvent), then
                         Closed. `stalled`: the connection is held, nothing is written (a
                         hung server or TCP connection); events wait on the subscription
    Unsubscribe

Authentication: HTTP Basic (mailbox address + password), NTLM (pyspnego's
acceptor, with the same passwords), or an OAuth bearer token. A refused login
is HTTP 401; throttling is the SOAP fault ErrorServerBusy with
BackOffMilliseconds, as Exchange sends it.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import spnego
from lxml import etree
from werkzeug.wrappers import Request, Response

from .folders import folder_xml, subfolders
from .store import MAX_CHANGES, EwsItem, EwsMailbox, EwsStore, Subscription

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS = {"s": S, "m": M, "t": T}
VERSION = (
    '<h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" '
    'MinorBuildNumber="6" Version="V2017_07_11" '
    'xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" '
    'xmlns="http://schemas.microsoft.com/exchange/services/2006/types" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>'
)


class SoapFaultError(Exception):
    def __init__(self, code: str, message: str, back_off_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.back_off_ms = back_off_ms


class ItemError(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def envelope(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{S}"><s:Header>{VERSION}</s:Header>'
        '<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xmlns:xsd="http://www.w3.org/2001/XMLSchema">{body}</s:Body></s:Envelope>'
    ).encode()


def fault(exc: SoapFaultError) -> bytes:
    extra = ""
    if exc.back_off_ms is not None:
        extra = (
            f'<t:MessageXml xmlns:t="{T}"><t:Value Name="BackOffMilliseconds">'
            f"{exc.back_off_ms}</t:Value></t:MessageXml>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{T}">a:{exc.code}</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(exc.message)}</faultstring>'
        "<detail>"
        f'<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">{exc.code}</e:ResponseCode>'
        f'<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">{escape(exc.message)}</e:Message>'
        f"{extra}</detail></s:Fault></s:Body></s:Envelope>"
    ).encode()


def response(operation: str, messages: list[str]) -> bytes:
    inner = "".join(messages)
    return envelope(
        f'<m:{operation}Response xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'
        f"{inner}</m:ResponseMessages></m:{operation}Response>"
    )


def success(operation: str, content: str = "") -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Success">'
        f"<m:ResponseCode>NoError</m:ResponseCode>{content}</m:{operation}ResponseMessage>"
    )


def error(operation: str, code: str, text: str, extra: str = "") -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(text)}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{extra}</m:{operation}ResponseMessage>"
    )


def sync_error(code: str, text: str) -> str:
    """SyncFolderItems errors still carry SyncState and IncludesLastItemInRange (empty)."""
    return error(
        "SyncFolderItems",
        code,
        text,
        "<m:SyncState/><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>",
    )


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mailbox_xml(name: str, address: str) -> str:
    return (
        f"<t:Mailbox><t:Name>{escape(name or address)}</t:Name>"
        f"<t:EmailAddress>{escape(address)}</t:EmailAddress>"
        "<t:RoutingType>SMTP</t:RoutingType><t:MailboxType>OneOff</t:MailboxType></t:Mailbox>"
    )


def _item_xml(mailbox: EwsMailbox, item: EwsItem, fields: set[str], mime: bool) -> str:
    parts: list[str] = []
    if mime:
        encoded = base64.b64encode(item.raw).decode()
        parts.append(f'<t:MimeContent CharacterSet="UTF-8">{encoded}</t:MimeContent>')
    parts.append(f'<t:ItemId Id="{item.id}" ChangeKey="{item.change_key}"/>')
    if "item:ParentFolderId" in fields:
        parts.append(
            f'<t:ParentFolderId Id="{mailbox.folder_ids[item.folder]}" ChangeKey="AQAAAA=="/>'
        )
    if "item:ItemClass" in fields:
        parts.append(f"<t:ItemClass>{item.item_class()}</t:ItemClass>")
    if "item:Subject" in fields and item.header("Subject") is not None:
        parts.append(f"<t:Subject>{escape(item.header('Subject') or '')}</t:Subject>")
    if "item:DateTimeReceived" in fields:
        parts.append(f"<t:DateTimeReceived>{_iso(item.received)}</t:DateTimeReceived>")
    if "item:Size" in fields:
        parts.append(f"<t:Size>{len(item.raw)}</t:Size>")
    if "item:InReplyTo" in fields and item.header("In-Reply-To"):
        parts.append(f"<t:InReplyTo>{escape(item.header('In-Reply-To') or '')}</t:InReplyTo>")
    if "item:IsDraft" in fields:
        parts.append(f"<t:IsDraft>{'true' if item.folder == 'drafts' else 'false'}</t:IsDraft>")
    if "item:DateTimeSent" in fields:
        parts.append(f"<t:DateTimeSent>{_iso(item.received)}</t:DateTimeSent>")
    if "item:ConversationId" in fields:
        parts.append(f'<t:ConversationId Id="{item.conversation_id}"/>')
    if "message:From" in fields:
        name, address = item.sender()
        if address:
            parts.append(f"<t:From>{_mailbox_xml(name, address)}</t:From>")
    if "message:InternetMessageId" in fields:
        parts.append(
            f"<t:InternetMessageId>{escape(item.internet_message_id)}</t:InternetMessageId>"
        )
    if "message:References" in fields and item.header("References"):
        parts.append(f"<t:References>{escape(item.header('References') or '')}</t:References>")
    return "<t:Message>" + "".join(parts) + "</t:Message>"


def _shape(request: etree._Element, tag: str = "ItemShape") -> tuple[set[str], bool]:
    shape = request.find(f"m:{tag}", NS)
    fields: set[str] = set()
    mime = False
    if shape is None:
        return fields, mime
    for uri in shape.iterfind("t:AdditionalProperties/t:FieldURI", NS):
        value = uri.get("FieldURI", "")
        if value == "item:MimeContent":
            mime = True
        else:
            fields.add(value)
    include_mime = shape.find("t:IncludeMimeContent", NS)
    if include_mime is not None and (include_mime.text or "").strip() == "true":
        mime = True
    return fields, mime


class EwsApp:
    def __init__(self, store: EwsStore) -> None:
        self.store = store
        self.stream_seconds: float | None = None  # cap on GetStreamingEvents (tests)
        # Exchange writes to an idle stream at least this often (Microsoft's own client
        # expects 45 s); "exchange": ConnectionStatus OK alone, "gromox": OK + StatusEvent.
        self.keepalive_seconds = 45.0
        self.keepalive_style = "exchange"
        self.stalled = threading.Event()
        # Events wait on their subscription, keep-alives still go out (the scale bench's
        # capacity phases: no push, the streams alive).
        self.held = threading.Event()
        # Subscribe takes this long (a busy server); the most answered at once is kept.
        self.subscribe_seconds = 0.0
        self._subscribing = 0
        self.most_subscribing = 0
        self.closing = threading.Event()
        self._ntlm: dict[int, Any] = {}
        self.ntlm_users_file: str | None = None
        self.last_auth_error: str | None = None
        # Counted for the scale bench (bench.scale_ews): streams open now, frames that
        # carried events, SyncFolderItems calls by folder.
        self._counts = threading.Lock()
        self.live_streams = 0
        self.event_frames = 0
        self.sync_calls: dict[str, int] = {}

    # -- WSGI --------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        if request.path.lower() != "/ews/exchange.asmx" or request.method != "POST":
            return Response(b"Not Found", status=404)(environ, start_response)
        request.get_data()  # read it all, so the connection can serve the next request
        mailbox, auth_response = self.authenticate(request)
        if mailbox is None:
            return (auth_response or Response(b"", status=401))(environ, start_response)
        try:
            document = etree.fromstring(request.get_data())
            body = document.find("s:Body", NS)
            if body is None or len(body) == 0:
                raise SoapFaultError("ErrorInvalidRequest", "The request is invalid.")
            operation_element = body[0]
            operation = etree.QName(operation_element).localname
            environ["fake.label"] = operation
            with self.store.lock:
                mailbox.calls += 1
                if mailbox.busy_calls > 0:
                    mailbox.busy_calls -= 1
                    raise SoapFaultError(
                        "ErrorServerBusy",
                        "The server cannot service this request right now. Try again later.",
                        back_off_ms=mailbox.back_off_ms,
                    )
                if mailbox.fault_calls > 0 and mailbox.fault is not None:
                    mailbox.fault_calls -= 1
                    raise SoapFaultError(*mailbox.fault)
            if operation == "GetStreamingEvents":
                return self.streaming(mailbox, operation_element, environ, start_response)
            handler = getattr(self, f"op_{operation}", None)
            if handler is None:
                raise SoapFaultError(
                    "ErrorInvalidRequest", f"The operation {operation} is not modelled."
                )
            payload: bytes = handler(mailbox, operation_element)
            answer = Response(payload, status=200, content_type="text/xml; charset=utf-8")
        except SoapFaultError as exc:
            answer = Response(fault(exc), status=500, content_type="text/xml; charset=utf-8")
        except etree.XMLSyntaxError:
            answer = Response(
                fault(
                    SoapFaultError("ErrorSchemaValidation", "The request failed schema validation.")
                ),
                status=500,
                content_type="text/xml; charset=utf-8",
            )
        return answer(environ, start_response)

    # -- authentication ----------------------------------------------------------------

    def authenticate(self, request: Request) -> tuple[EwsMailbox | None, Response | None]:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None, None
            mailbox = self.store.mailbox(user.split("\\")[-1])
            if mailbox is not None and mailbox.password == password:
                return mailbox, None
            return None, self._challenge()
        if scheme == "bearer":
            email = self.store.bearer_tokens.get(value.strip())
            mailbox = self.store.mailbox(email) if email else None
            return (mailbox, None) if mailbox else (None, self._challenge())
        if scheme in ("ntlm", "negotiate"):
            return self._ntlm_step(request, value.strip(), scheme)
        connection = self._connection_key(request)
        if connection in self._ntlm and self._ntlm[connection][1] is not None:
            return self.store.mailbox(self._ntlm[connection][1]), None
        return None, self._challenge()

    def forget_connections(self) -> None:
        """Drop every NTLM-authenticated connection (a reset server)."""
        self._ntlm.clear()

    def _challenge(self) -> Response:
        answer = Response(b"", status=401)
        answer.headers.add("WWW-Authenticate", "Negotiate")
        answer.headers.add("WWW-Authenticate", "NTLM")
        answer.headers.add("WWW-Authenticate", 'Basic realm="exchange.fake.test"')
        return answer

    def _connection_key(self, request: Request) -> int:
        return int(request.environ.get("fake.connection", 0))

    def _ntlm_step(
        self, request: Request, token: str, scheme: str
    ) -> tuple[EwsMailbox | None, Response | None]:
        key = self._connection_key(request)
        context = self._ntlm.get(key, (None, None))[0]
        if context is None:
            if self.ntlm_users_file is None:
                return None, self._challenge()
            os.environ["NTLM_USER_FILE"] = self.ntlm_users_file
            context = spnego.server(protocol=scheme)
            self._ntlm[key] = (context, None)
        try:
            out = context.step(base64.b64decode(token))
        except Exception as exc:  # noqa: BLE001 - any failure is a refused login
            self.last_auth_error = repr(exc)
            self._ntlm.pop(key, None)
            return None, Response(b"", status=401)
        if not context.complete:
            answer = Response(b"", status=401)
            label = "Negotiate" if scheme == "negotiate" else "NTLM"
            answer.headers["WWW-Authenticate"] = f"{label} " + base64.b64encode(out or b"").decode()
            return None, answer
        user = str(context.client_principal or "").split("\\")[-1]
        mailbox = self._mailbox_for_ntlm(user)
        self._ntlm[key] = (context, mailbox.email if mailbox else None)
        return (mailbox, None) if mailbox else (None, Response(b"", status=401))

    def _mailbox_for_ntlm(self, user: str) -> EwsMailbox | None:
        for mailbox in self.store.mailboxes.values():
            if mailbox.email.split("@")[0] == user.lower() or mailbox.email == user.lower():
                return mailbox
        return None

    # -- operations --------------------------------------------------------------------

    def _folder_name(self, mailbox: EwsMailbox, element: etree._Element) -> str | None:
        distinguished = element.find("t:DistinguishedFolderId", NS)
        if distinguished is not None:
            name = distinguished.get("Id", "")
            return name if name in self.store.FOLDERS and name in mailbox.folder_ids else None
        plain = element.find("t:FolderId", NS)
        if plain is not None:
            return self.store.folder_name(mailbox, plain.get("Id", ""))
        return None

    def op_GetFolder(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        messages = []
        ids = request.find("m:FolderIds", NS)
        for child in ids if ids is not None else []:
            holder = etree.Element("x")
            holder.append(child.__copy__())
            name = self._folder_name(mailbox, holder)
            if name is None:
                messages.append(
                    error(
                        "GetFolder",
                        "ErrorFolderNotFound",
                        "The specified folder could not be found in the store.",
                    )
                )
            else:
                messages.append(
                    success("GetFolder", f"<m:Folders>{folder_xml(mailbox, name)}</m:Folders>")
                )
        return response("GetFolder", messages)

    def op_FindFolder(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        parents = request.find("m:ParentFolderIds", NS)
        name = self._folder_name(mailbox, parents) if parents is not None else None
        if name is None:
            return response(
                "FindFolder",
                [
                    error(
                        "FindFolder",
                        "ErrorFolderNotFound",
                        "The specified folder could not be found in the store.",
                    )
                ],
            )
        view = request.find("m:IndexedPageFolderView", NS)
        offset = int(view.get("Offset", "0")) if view is not None else 0
        limit = int(view.get("MaxEntriesReturned", "1000")) if view is not None else 1000
        with self.store.lock:
            found = subfolders(mailbox, name, deep=request.get("Traversal") == "Deep")
            page = found[offset : offset + limit]
            rendered = "".join(folder_xml(mailbox, key) for key in page)
        last = offset + len(page) >= len(found)
        content = (
            f'<m:RootFolder IndexedPagingOffset="{offset + len(page)}" '
            f'TotalItemsInView="{len(found)}" IncludesLastItemInRange="{str(last).lower()}">'
            f"<t:Folders>{rendered}</t:Folders></m:RootFolder>"
        )
        return response("FindFolder", [success("FindFolder", content)])

    def op_SyncFolderItems(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        sync_folder = request.find("m:SyncFolderId", NS)
        name = self._folder_name(mailbox, sync_folder) if sync_folder is not None else None
        if name is None:
            return response(
                "SyncFolderItems",
                [
                    sync_error(
                        "ErrorFolderNotFound",
                        "The specified folder could not be found in the store.",
                    )
                ],
            )
        with self._counts:
            self.sync_calls[name] = self.sync_calls.get(name, 0) + 1
        fields, mime = _shape(request)
        if mime:
            return response(
                "SyncFolderItems",
                [
                    sync_error(
                        "ErrorInvalidPropertyRequest",
                        "This property was requested, but it isn't supported.",
                    )
                ],
            )
        limit = int((request.findtext("m:MaxChangesReturned", "100", NS) or "100").strip())
        if not 1 <= limit <= MAX_CHANGES:
            return response(
                "SyncFolderItems",
                [
                    sync_error(
                        "ErrorInvalidArgument", "MaxChangesReturned must be between 1 and 512."
                    )
                ],
            )
        state_text = (request.findtext("m:SyncState", "", NS) or "").strip()
        with self.store.lock:
            # A pending entry: (change seq, item id, kind). The first sync lists a
            # snapshot of the folder (seq 0); later ones the folder's change log.
            if state_text:
                try:
                    state = json.loads(base64.b64decode(state_text))
                except ValueError:
                    state = None
                if (
                    not state
                    or state.get("f") != name
                    or int(state.get("s", -1)) < mailbox.oldest_seq
                ):
                    return response(
                        "SyncFolderItems",
                        [
                            sync_error(
                                "ErrorInvalidSyncStateData",
                                "Synchronization state data is corrupt or otherwise invalid.",
                            )
                        ],
                    )
                base = int(state["s"])
                pending = [(0, item_id, "create") for item_id in state.get("first") or []]
            else:
                base = mailbox.seq
                snapshot = sorted(
                    (i for i in mailbox.items.values() if i.folder == name),
                    key=lambda i: i.received,
                )
                pending = [(0, i.id, "create") for i in snapshot]
            pending += [
                (c.seq, c.item_id, c.kind)
                for c in mailbox.changes
                if c.seq > base and c.folder == name
            ]
            page, rest = pending[:limit], pending[limit:]
            includes_last = not rest
            token: dict[str, Any] = {
                "f": name,
                "s": base,
                "first": [i for seq, i, _ in rest if seq == 0],
            }
            consumed = [seq for seq, _, _ in page if seq]
            if consumed:
                token["s"] = max(consumed)
            if includes_last:
                token = {"f": name, "s": mailbox.seq}
            changes: list[str] = []
            for _, item_id, kind in page:
                if kind == "delete":
                    changes.append(
                        f'<t:Delete><t:ItemId Id="{item_id}" ChangeKey="AQAAAA=="/></t:Delete>'
                    )
                    continue
                item = mailbox.items.get(item_id)
                if item is None or item.folder != name:
                    continue
                changes.append(f"<t:Create>{_item_xml(mailbox, item, fields, False)}</t:Create>")
            new_state = base64.b64encode(json.dumps(token).encode()).decode()
        content = (
            f"<m:SyncState>{new_state}</m:SyncState>"
            f"<m:IncludesLastItemInRange>{str(includes_last).lower()}"
            "</m:IncludesLastItemInRange>"
            f"<m:Changes>{''.join(changes)}</m:Changes>"
        )
        return response("SyncFolderItems", [success("SyncFolderItems", content)])

    def op_GetItem(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        fields, mime = _shape(request)
        messages = []
        for item_id in request.iterfind("m:ItemIds/t:ItemId", NS):
            item = mailbox.items.get(item_id.get("Id", ""))
            if item is None:
                messages.append(
                    error(
                        "GetItem",
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    )
                )
            elif mime and item.id in self.store.faults.corrupt_ids:
                messages.append(
                    error(
                        "GetItem",
                        "ErrorMimeContentConversionFailed",
                        "Microsoft.Exchange.Data.Storage.ConversionFailedException",
                    )
                )
            else:
                messages.append(
                    success(
                        "GetItem", f"<m:Items>{_item_xml(mailbox, item, fields, mime)}</m:Items>"
                    )
                )
        return response("GetItem", messages)

    def op_CreateItem(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        disposition = request.get("MessageDisposition", "SaveOnly")
        messages = []
        for message in request.iterfind("m:Items/t:Message", NS):
            encoded = message.findtext("t:MimeContent", None, NS)
            if not encoded:
                messages.append(
                    error("CreateItem", "ErrorInvalidRequest", "Only MIME messages are modelled.")
                )
                continue
            raw = base64.b64decode(encoded)
            if disposition == "SaveOnly":
                item = self.store.add_item(mailbox.email, raw, "drafts")
                messages.append(
                    success(
                        "CreateItem",
                        f'<m:Items><t:Message><t:ItemId Id="{item.id}" '
                        f'ChangeKey="{item.change_key}"/></t:Message></m:Items>',
                    )
                )
            else:
                draft = self.store.add_item(mailbox.email, raw, "drafts")
                self.store.send(mailbox.email, draft.id)
                messages.append(success("CreateItem", "<m:Items/>"))
        return response("CreateItem", messages)

    def op_SendItem(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        messages = []
        for item_id in request.iterfind("m:ItemIds/t:ItemId", NS):
            item = mailbox.items.get(item_id.get("Id", ""))
            if item is None or item.folder != "drafts":
                messages.append(
                    error(
                        "SendItem",
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    )
                )
                continue
            self.store.send(mailbox.email, item.id)
            messages.append(success("SendItem"))
        return response("SendItem", messages)

    def op_FindItem(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        fields, _ = _shape(request)
        folders = request.find("m:ParentFolderIds", NS)
        name = self._folder_name(mailbox, folders) if folders is not None else None
        if name is None:
            return response(
                "FindItem",
                [
                    error(
                        "FindItem",
                        "ErrorFolderNotFound",
                        "The specified folder could not be found in the store.",
                    )
                ],
            )
        wanted: str | None = None
        for equal in request.iterfind(".//t:IsEqualTo", NS):
            uri = equal.find("t:FieldURI", NS)
            constant = equal.find("t:FieldURIOrConstant/t:Constant", NS)
            if (
                uri is not None
                and uri.get("FieldURI") == "message:InternetMessageId"
                and constant is not None
            ):
                wanted = constant.get("Value")
        with self.store.lock:
            found = [
                i
                for i in mailbox.items.values()
                if i.folder == name and (wanted is None or i.internet_message_id == wanted)
            ]
        items = "".join(_item_xml(mailbox, i, fields, False) for i in found)
        content = (
            f'<m:RootFolder IndexedPagingOffset="{len(found)}" TotalItemsInView="{len(found)}" '
            f'IncludesLastItemInRange="true"><t:Items>{items}</t:Items></m:RootFolder>'
        )
        return response("FindItem", [success("FindItem", content)])

    def op_Subscribe(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        with self._counts:
            self._subscribing += 1
            self.most_subscribing = max(self.most_subscribing, self._subscribing)
        try:
            if self.subscribe_seconds:
                time.sleep(self.subscribe_seconds)
            return self._subscribe(mailbox, request)
        finally:
            with self._counts:
                self._subscribing -= 1

    def _subscribe(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        streaming = request.find("m:StreamingSubscriptionRequest", NS)
        if streaming is None:
            return response(
                "Subscribe",
                [
                    error(
                        "Subscribe",
                        "ErrorInvalidRequest",
                        "Only streaming subscriptions are modelled.",
                    )
                ],
            )
        folders: set[str] = set()
        folder_ids = streaming.find("t:FolderIds", NS)
        for child in folder_ids if folder_ids is not None else []:
            holder = etree.Element("x")
            holder.append(child.__copy__())
            name = self._folder_name(mailbox, holder)
            if name:
                folders.add(name)
        subscription = Subscription(
            id=base64.b64encode(uuid.uuid4().bytes * 2).decode(),
            email=mailbox.email,
            folders=folders,
        )
        self.store.subscribe(subscription)
        return response(
            "Subscribe",
            [success("Subscribe", f"<m:SubscriptionId>{subscription.id}</m:SubscriptionId>")],
        )

    def op_Unsubscribe(self, mailbox: EwsMailbox, request: etree._Element) -> bytes:
        subscription_id = (request.findtext("m:SubscriptionId", "", NS) or "").strip()
        found = self.store.unsubscribe(subscription_id)
        if found is None:
            return response(
                "Unsubscribe",
                [
                    error(
                        "Unsubscribe",
                        "ErrorSubscriptionNotFound",
                        "The specified subscription was not found.",
                    )
                ],
            )
        return response("Unsubscribe", [success("Unsubscribe")])

    # -- streaming ---------------------------------------------------------------------

    def streaming(
        self,
        mailbox: EwsMailbox,
        request: etree._Element,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        ids = [
            (e.text or "").strip()
            for e in request.iterfind("m:SubscriptionIds/t:SubscriptionId", NS)
        ]
        minutes = int((request.findtext("m:ConnectionTimeout", "30", NS) or "30").strip())
        subscriptions = [self.store.subscriptions.get(i) for i in ids]
        if not ids or any(s is None or s.email != mailbox.email for s in subscriptions):
            body = response(
                "GetStreamingEvents",
                [
                    error(
                        "GetStreamingEvents",
                        "ErrorSubscriptionNotFound",
                        "The specified subscription was not found.",
                        "<m:ErrorSubscriptionIds>"
                        + "".join(f"<t:SubscriptionId>{escape(i)}</t:SubscriptionId>" for i in ids)
                        + "</m:ErrorSubscriptionIds>",
                    )
                ],
            )
            return Response(body, status=200, content_type="text/xml; charset=utf-8")(
                environ, start_response
            )
        start_response("200 OK", [("Content-Type", "text/xml; charset=utf-8")])
        limit = (
            minutes * 60 if self.stream_seconds is None else min(minutes * 60, self.stream_seconds)
        )
        return self._stream([s for s in subscriptions if s is not None], time.monotonic() + limit)

    def _stream(self, subscriptions: list[Subscription], deadline: float) -> Iterator[bytes]:
        with self._counts:
            self.live_streams += 1
        try:
            yield from self._frames(subscriptions, deadline)
        finally:
            with self._counts:
                self.live_streams -= 1

    def _frames(self, subscriptions: list[Subscription], deadline: float) -> Iterator[bytes]:
        """The stream's envelopes. A stream sleeps on its subscription until an event, its
        keep-alive or its end: 10,000 idle streams (the scale bench) cost no CPU."""
        if self.stalled.is_set():
            yield b""  # the HTTP head goes out, then nothing: a server that hung
        while self.stalled.is_set() and not self.closing.wait(0.05):
            pass
        yield self._stream_envelope([], "OK")
        written = time.monotonic()
        first = subscriptions[0]
        while time.monotonic() < deadline and not self.closing.is_set():
            if self.stalled.is_set():  # held open, silent; events wait on the subscription
                self.closing.wait(0.05)
                continue
            wait = min(deadline, written + self.keepalive_seconds) - time.monotonic()
            if len(subscriptions) > 1:
                wait = min(wait, 0.2)  # woken by the first one's events; the others polled
            with first.wakeup:
                idle = self.held.is_set() or not first.events
                if idle and wait > 0 and not self.closing.is_set():
                    first.wakeup.wait(timeout=wait)
            if self.stalled.is_set():
                continue  # it hung meanwhile: what happened waits on the subscription
            batch: list[tuple[Subscription, list[tuple[str, str, str, str]]]] = []
            for subscription in [] if self.held.is_set() else subscriptions:
                with subscription.wakeup:
                    if subscription.events:
                        batch.append((subscription, list(subscription.events)))
                        subscription.events.clear()
            if batch:
                yield self._stream_envelope(batch, "OK")
                with self._counts:
                    self.event_frames += 1
                written = time.monotonic()
            elif time.monotonic() - written >= self.keepalive_seconds:
                yield self._keepalive(subscriptions)
                written = time.monotonic()
        yield self._stream_envelope([], "Closed")

    def wake_streams(self) -> None:
        """Every stream looks at `closing` now, not at its next keep-alive."""
        with self.store.lock:
            subscriptions = list(self.store.subscriptions.values())
        for subscription in subscriptions:
            with subscription.wakeup:
                subscription.wakeup.notify_all()

    def _keepalive(self, subscriptions: list[Subscription]) -> bytes:
        """What a server writes to an idle stream so neither side takes it for dead."""
        if self.keepalive_style == "exchange":
            return self._stream_envelope([], "OK")
        # gromox (exch/ews, ews_event_stream_interval): a Notification holding a StatusEvent
        parts = "".join(
            f"<m:Notification><t:SubscriptionId>{s.id}</t:SubscriptionId>"
            "<t:PreviousWatermark>AAAAAA==</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents>"
            "<t:StatusEvent><t:Watermark>AAAAAA==</t:Watermark></t:StatusEvent></m:Notification>"
            for s in subscriptions
        )
        message = success(
            "GetStreamingEvents",
            f"<m:Notifications>{parts}</m:Notifications><m:ConnectionStatus>OK</m:ConnectionStatus>",
        )
        return response("GetStreamingEvents", [message])

    def _stream_envelope(
        self, batch: list[tuple[Subscription, list[tuple[str, str, str, str]]]], status: str
    ) -> bytes:
        notifications = ""
        if batch:
            parts = []
            for subscription, events in batch:
                mailbox = self.store.mailbox(subscription.email)
                assert mailbox is not None
                rendered = "".join(
                    f"<t:{kind}><t:Watermark>{watermark}</t:Watermark><t:TimeStamp>{_iso(datetime.now(UTC))}</t:TimeStamp>"
                    f'<t:ItemId Id="{item_id}" ChangeKey="AQAAAA=="/>'
                    f'<t:ParentFolderId Id="{mailbox.folder_ids[folder]}" ChangeKey="AQAAAA=="/>'
                    f"</t:{kind}>"
                    for kind, item_id, folder, watermark in events
                )
                parts.append(
                    f"<m:Notification><t:SubscriptionId>{subscription.id}</t:SubscriptionId>"
                    f"<t:PreviousWatermark>{events[0][3]}</t:PreviousWatermark>"
                    f"<t:MoreEvents>false</t:MoreEvents>{rendered}</m:Notification>"
                )
            notifications = "<m:Notifications>" + "".join(parts) + "</m:Notifications>"
        message = success(
            "GetStreamingEvents",
            f"{notifications}<m:ConnectionStatus>{status}</m:ConnectionStatus>",
        )
        return response("GetStreamingEvents", [message])


__all__ = ["EwsApp", "quoteattr"]
