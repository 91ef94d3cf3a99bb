"""Automatic acknowledgements: "we received your message", ticket receipts, helpdesks.

What this module owns: recognising a receipt a machine sends on someone's
behalf when our message reaches a shared inbox or a helpdesk (Zendesk,
Freshdesk, a company's "info@" autoresponder ...), often with no auto-reply
header at all. Such a message is an auto-reply, not a person answering: it
must never halt a sequence as a reply would, and it says nothing about anyone
being away (the sequence engine records it and pauses nothing).

The decision needs two things, so that a person who writes "got your email,
let me check" is never taken for a machine:

1. receipt wording: the subject says it is an acknowledgement ("Request
   received", "Eingangsbestätigung", "Accusé de réception" ...), or the new text
   says the message was received or filed ("we have received your request",
   "your ticket has been created", "nous avons bien reçu votre message" ...);
2. a machine's mark: automatic-message wording ("this is an automated
   response", "please do not reply", "automatisch erstellt" ...), a ticket or
   case number, a promise of an answer within a stated time, a helpdesk's own
   headers, an RFC 3834 / vendor auto-reply header, or a no-reply sender.

A subject that is itself an acknowledgement needs no second mark.
"""

from __future__ import annotations

import re
from email.message import Message

__all__ = ["is_acknowledgement"]

_TEXT_WINDOW = 2000

_ACK_SUBJECT = re.compile(
    r"(?:request|message|e-?mail|enquiry|inquiry|ticket|case|submission) (?:has been |was )?"
    r"(?:received|logged|created|opened|registered)"
    r"|we(?:'ve| have) received your|automatic acknowledge?ment|acknowledge?ment of receipt"
    r"|receipt (?:confirmation|of your)|confirmation of receipt"
    r"|eingangsbest[äa]tigung|ihre anfrage (?:ist eingegangen|wurde erhalten)"
    r"|accus[ée] de r[ée]ception|demande (?:bien )?re[çc]ue|acuse de recibo|solicitud recibida"
    r"|conferma di ricezione|richiesta ricevuta|confirma[çc][ãa]o de rece[çb]i?mento"
    r"|solicita[çc][ãa]o recebida|ontvangstbevestiging|bericht ontvangen"
    r"|mottagningsbekr[äa]ftelse|kvittering for (?:modtagelse|mottak)"
    r"|potwierdzenie (?:otrzymania|przyj[ęe]cia)|подтверждение получения"
    r"|受付完了|受付のお知らせ|受け付けました|已收到您的|접수 ?완료",
    re.IGNORECASE,
)

_RECEIVED = re.compile(
    r"(?:we|i)(?:'ve| have)? (?:successfully |just )?(?:received|got) your (?:e-?mail|message"
    r"|request|inquiry|enquiry|ticket|submission|mail|note|question)"
    r"|your (?:e-?mail|message|request|inquiry|enquiry|ticket|case|submission|query)"
    r"(?: \(?#?[\w-]{1,20}\)?)? (?:has been|was|is) (?:successfully )?"
    r"(?:received|logged|created|opened|registered"
    r"|submitted|forwarded to)"
    r"|(?:wir haben|haben wir) (?:ihre|deine) (?:nachricht|e-?mail|anfrage|mail) .{0,20}erhalten"
    r"|(?:ihre|deine) (?:nachricht|anfrage|e-?mail) (?:ist|wurde) .{0,25}(?:eingegangen|erhalten)"
    r"|nous avons (?:bien )?re[çc]u votre (?:message|demande|e-?mail|courriel)"
    r"|votre (?:message|demande|courriel) a (?:bien )?[ée]t[ée] (?:re[çc]ue?|enregistr[ée]e?)"
    r"|hemos recibido (?:su|tu) (?:mensaje|solicitud|correo|consulta|e-?mail)"
    r"|(?:su|tu) (?:mensaje|solicitud|consulta) (?:ha sido|fue) (?:recibid|registrad)"
    r"|abbiamo ricevuto (?:il suo|la sua|il tuo|la tua) (?:messaggio|richiesta|e-?mail)"
    r"|recebemos (?:a sua|sua|o seu|seu|a tua|o teu) (?:mensagem|solicita[çc][ãa]o|pedido|e-?mail)"
    r"|(?:wij|we) hebben (?:uw|je) (?:bericht|e-?mail|aanvraag|vraag) (?:in goede orde )?ontvangen"
    r"|vi har (?:tagit emot|mottagit|modtaget|mottatt) (?:ditt|din|dit) "
    r"|olemme vastaanottaneet|otrzymali[śs]my (?:twoj[ąa]|pa[ńn]sk[ąa]|pana|pani) "
    r"|получили (?:ваше|твое|твоё) (?:обращение|сообщение|письмо)"
    r"|ваше (?:обращение|сообщение) (?:принято|зарегистрировано|получено)"
    r"|お問い合わせを受け付け|受け付けいたしました|受信いたしました|已收到您的|문의가 접수"
    r"|mesaj[ıi]n[ıi]z[ıi] ald[ıi]k|talebiniz al[ıi]nm[ıi][şs]t[ıi]r",  # noqa: RUF001 - Turkish
    re.IGNORECASE,
)

# What a person answering would not write.
_MACHINE_WORDING = re.compile(
    r"this is an? (?:automated|automatic|auto-?generated|system[- ]generated) "
    r"|(?:was|has been|is) (?:sent|generated|created) automatically|automatically generated"
    r"|auto-?generated (?:message|e-?mail|response|reply)"
    r"|(?:please )?do not (?:reply|respond) (?:to )?this|please don't reply"
    r"|(?:mailbox|address|inbox) is not monitored|unmonitored (?:mailbox|address)"
    r"|automatisch (?:erstellt|generiert|versendet|erzeugt)|automatische (?:nachricht|e-?mail)"
    r"|bitte antworten sie nicht|nicht auf diese (?:e-?mail|nachricht) antworten"
    r"|message (?:automatique|g[ée]n[ée]r[ée] automatiquement)|merci de ne pas r[ée]pondre"
    r"|ne pas r[ée]pondre [àa] ce|mensaje autom[áa]tico|generado autom[áa]ticamente"
    r"|no (?:responda|conteste) a este|messaggio (?:automatico|generato automaticamente)"
    r"|non rispondere a questa|mensagem (?:autom[áa]tica|gerada automaticamente)"
    r"|n[ãa]o responda a (?:este|esta)|automatisch (?:gegenereerd|verzonden) bericht"
    r"|dit is een automatisch|gelieve niet te (?:antwoorden|reageren)"
    r"|automatiskt (?:genererat|meddelande|skickat)|svara inte p[åa] (?:detta|det här)"
    r"|automatisk (?:genereret|generert|besked|melding)|svar ikke p[åa] denne"
    r"|automaattinen viesti|[äa]l[äa] vastaa t[äa]h[äa]n|wygenerowana automatycznie"
    r"|wiadomo[śs][ćc] automatyczna|nie odpowiadaj na t[ęe]"
    r"|автоматическ(?:ое|ий) (?:сообщение|уведомление|ответ)|не отвечайте на (?:это|данное)"  # noqa: RUF001 - Russian
    r"|自動送信|自動配信|自動返信|返信(?:しないで|できません|はできません)|系统自动|请勿回复"
    r"|자동 발송|회신하지 마",
    re.IGNORECASE,
)

# "Ticket #48213", "[Request #4821]", "Case 00012345", "Vorgangsnummer: 1234", "受付番号".
_TICKET = re.compile(
    r"(?:ticket|request|case|incident|reference|ref|anfrage|vorgang|demande|dossier|solicitud"
    r"|caso|richiesta|pratica|chamado|protocolo|aanvraag|[äa]rende|sak|zg[łl]oszenie"
    r"|обращение|заявка)(?: ?(?:number|no\.?|nr\.?|id|nummer|num[ée]ro|n[°ºo]\.?|número"
    r"|numero|номер))? ?[:#№]? ?#?\[?[a-z]{0,4}-?\d{3,}"
    r"|(?:ticket|vorgangs|referenz|anfrage)nummer|受付番号|工单号|접수 ?번호",
    re.IGNORECASE,
)

# "a member of our team will respond within 2 business days"
_PROMISE = re.compile(
    r"(?:respond|reply|get back to you|answer|contact you|be in touch)[^.\n]{0,40}"
    r"within (?:the next )?(?:\d+|one|two|three|a few|24|48|72) (?:business |working )?"
    r"(?:hours?|days?)"
    r"|(?:innerhalb|binnen) (?:von )?\d+ (?:stunden|werktagen|arbeitstagen|tagen)"
    r"|(?:dans les|sous) \d+ (?:heures|jours)|en un plazo de \d+|entro \d+ (?:ore|giorni)"
    r"|(?:binnen|inom) \d+ (?:uur|werkdagen|timmar|dagar)",
    re.IGNORECASE,
)

_HELPDESK_HEADERS = (
    "x-zendesk-from-account-id",
    "x-zendesk-email-id",
    "x-freshdesk-ticket-id",
    "x-helpscout-conversation-id",
    "x-kayako-ticket-id",
    "x-otrs-ticketnumber",
    "x-rt-ticket",
    "x-ticket-id",
    "x-servicenow-generated",
    "x-jira-fingerprint",
)

_NO_REPLY_SENDER = re.compile(
    r"(?:^|[<\s\"])(?:no-?reply|do-?not-?reply|donotreply|auto-?(?:reply|responder|confirm)"
    r"|support|helpdesk|servicedesk|tickets?|kundenservice)"
    r"[@+.-]",
    re.IGNORECASE,
)


def is_acknowledgement(msg: Message, subject: str, new_text: str) -> bool:
    """True if ``msg`` only confirms that our message arrived (see module docstring)."""
    flat = " ".join(new_text[:_TEXT_WINDOW].split())
    if _ACK_SUBJECT.search(subject):
        return True
    if not _RECEIVED.search(flat):
        return False
    return (
        bool(_MACHINE_WORDING.search(flat))
        or bool(_TICKET.search(subject) or _TICKET.search(flat))
        or bool(_PROMISE.search(flat))
        or _has_machine_headers(msg)
    )


def _has_machine_headers(msg: Message) -> bool:
    names = {k.lower() for k in msg}
    if any(h in names for h in _HELPDESK_HEADERS):
        return True
    if names & {"x-autoreply", "x-autorespond", "x-autoreply-from"}:
        return True
    if str(msg.get("Auto-Submitted", "no")).strip().lower()[:2] != "no":
        return True
    if str(msg.get("Precedence", "")).strip().lower() in ("auto_reply", "bulk", "junk", "list"):
        return True
    return bool(_NO_REPLY_SENDER.search(str(msg.get("From", ""))))
