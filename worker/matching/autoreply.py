"""Auto-replies (out of office, vacation, "thanks for your message").

What this module owns: deciding that a message was written by a machine on a
person's behalf (``return_dates.py`` reads when that person is back).

Signals, strongest first:

1. Headers that only auto-responders set: RFC 3834 ``Auto-Submitted: auto-replied``,
   ``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply``, Apple's
   ``X-Apple-Action: VACATION``.
2. ``Auto-Submitted: auto-generated`` (Exchange's out-of-office sends this) counts
   when the subject or body also reads like an auto-reply, or the message answers
   one of ours (In-Reply-To / References): plain notifications send it too.
3. Subject or body wording in many languages ("Automatic reply:", "Abwesenheitsnotiz",
   "Réponse automatique", "I am out of the office" ...): many out-of-office
   messages carry no header at all.

A headerless notice under a "Re:" subject must also say what happens to the
message meanwhile ("I will reply upon my return", "for urgent matters ..."):
people write "I'm out of the office until Monday, but yes" in real replies.

Not signals on their own: ``X-MS-Exchange-Inbox-Rules-Loop`` (inbox-rule forwards
carry it too) and ``X-Auto-Response-Suppress`` (it asks *others* not to reply).
"""

from __future__ import annotations

import re
from email.message import Message

from worker.matching.replytext import REPLY_PREFIX

__all__ = ["is_auto_reply", "mentions_absence"]

_SUBJECT = re.compile(
    r"^\s*+(?:\[[^\]]*+\]\s*+)?(?:"
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response|responder)"
    r"|autoreply|auto:|ooo\b|away (?:from|until|till|through)\b|away:|vacation|on leave"
    r"|on holiday|absent|.{1,60} is out of (?:the )?office"
    r"|abwesenheit|automatische antwort|nicht im b[üu]ro|urlaub"
    r"|r[ée]ponse automatique|absence|absent du bureau|message d'absence"
    r"|respuesta autom[áa]tica|fuera de la oficina|ausente|ausencia"
    r"|risposta automatica|fuori sede|fuori ufficio|assente"
    r"|resposta autom[áa]tica|fora do escrit[óo]rio|aus[êe]ncia"
    r"|automatisch antwoord|afwezig|niet aanwezig|buiten kantoor"
    r"|automatiskt svar|fr[åa]nvar(?:o|ande)|autosvar|automatisk svar|frav[æa]r|ferie"
    r"|automaattinen vastaus|poissa|lomalla"
    r"|odpowied[źz] automatyczna|automatyczna odpowied[źz]|nieobecno[śs][ćc]|poza biurem"
    r"|automatick[áa] odpov[ěe]d|mimo kancel[áa][řr]|otomatik yan[ıi]t|ofis d[ıi][şs][ıi]nda"  # noqa: RUF001 - foreign-language wording
    r"|автоматический ответ|автоответ|нет на месте|в отпуске"
    r"|自動応答|自動返信|不在|自动回复|자동 회신|부재중"
    r")",
    re.IGNORECASE,
)
# Wording of an absence notice in the body (first lines of new text).
_BODY = re.compile(
    r"(?:i am|i'm|i will be|i'll be|i am currently|i'm currently) (?:currently )?"
    r"(?:out of (?:the )?office|away from (?:the|my) (?:office|desk)|on (?:vacation|holiday|leave"
    r"|annual leave|parental leave|sick leave|a business trip|maternity leave)|out until"
    r"|ooo\b|absent)"
    r"|(?:limited|no) access to (?:my )?e-?mail|will (?:respond|reply|get back to you)"
    r" (?:to your (?:e-?mail|message) )?(?:upon|when|after|on) (?:my )?return"
    r"|returning to the office|back in the office|currently out of the office"
    r"|thank you for your (?:e-?mail|message)[.,!]? (?:i am|i'm)"
    r"|ich bin (?:derzeit |zurzeit |momentan |vom .{1,30} |bis .{1,30} )?(?:nicht im b[üu]ro"
    r"|abwesend|im urlaub|au[ßs]er haus)|bin ich (?:nicht im b[üu]ro|abwesend|im urlaub)"
    r"|je suis (?:actuellement )?(?:absente?|en (?:cong[ée]s?|vacances|d[ée]placement))"
    r"|estar[ée] fuera|estoy (?:fuera de la oficina|de vacaciones|ausente)"
    r"|sono (?:fuori (?:sede|ufficio)|in ferie|assente)|sar[òo] (?:fuori|assente|in ferie)"
    r"|estou (?:ausente|de f[ée]rias|fora do escrit[óo]rio)|estarei (?:ausente|fora)"
    r"|ik ben (?:momenteel |tot .{1,30} )?(?:afwezig|niet aanwezig|met vakantie|op vakantie)"
    r"|jag är (?:ledig|på semester|borta|frånvarande|tjänstledig)"
    r"|jeg er (?:på ferie|fraværende|ikke på kontoret|bortreist|på barsel)"
    r"|olen (?:lomalla|poissa|vuosilomalla)|jestem (?:na urlopie|nieobecn[ya]|poza biurem)"
    r"|不在にしております|休暇を取得|出張のため|外出しております|休暇中"
    r"|(?:i am|i'm) (?:currently )?on (?:paternity|medical|bereavement|study|extended|garden)"
    r" leave|(?:я )?(?:нахожусь )?(?:в отпуске|в командировке|вне офиса|на больничном)"
    r"|отсутствую|ofis d[ıi][şs][ıi]nday[ıi]m|izindeyim|tatildeyim|ofiste de[ğg]ilim"  # noqa: RUF001 - foreign-language wording
    r"|jsem (?:mimo kancel[áa][řr]|na dovolen[ée]|nep[řr][íi]tomn[ýa])"
    r"|szabads[áa]gon vagyok|h[áa]zon k[íi]v[üu]l vagyok|nem vagyok az irod[áa]ban"
    r"|sunt (?:[îi]n concediu|plecat[ăa]?)|nu sunt la birou"
    r"|είμαι εκτός γραφείου|βρίσκομαι (?:σε|εκτός)|είμαι σε άδεια|απουσιάζω"
    r"|不在办公室|不在辦公室|正在休假|休假中|出差中|휴가 ?중|부재 ?중|출장 ?중|자리를 비",
    re.IGNORECASE,
)

# What only a notice adds to "I am away": what happens to the message meanwhile.
_NOTICE_DETAIL = re.compile(
    r"(?:will|shall|i'll) (?:respond|reply|get back to you|answer|read|deal with)\b.{0,60}"
    r"\b(?:return|back)|upon my return|limited (?:or no )?access|no access to (?:my )?e-?mail"
    r"|(?:urgent|immediate) (?:matters|issues|requests|enquiries|inquiries|assistance|queries)"
    r"|in my absence|will not be (?:read|forwarded|monitored)|not (?:being )?monitored"
    r"|checking (?:my )?e-?mails? (?:intermittently|periodically|occasionally)|delayed response"
    r"|nach meiner r[üu]ckkehr|in dringenden f[äa]llen|eingeschr[äa]nkte?m? zugriff"
    r"|keinen zugriff|wenden sie sich|nicht weitergeleitet|meine vertretung"
    r"|[àa] mon retour|pour toute urgence|en cas d'urgence|acc[èe]s limit[ée]"
    r"|a mi (?:regreso|vuelta)|en caso de urgencia|asuntos urgentes|acceso limitado"
    r"|al mio (?:rientro|ritorno)|per urgenze|accesso limitato"
    r"|no meu regresso|quando (?:eu )?(?:voltar|regressar|retornar)|em caso de urg[êe]ncia"
    r"|acesso limitado|na mijn terugkomst|bij mijn terugkeer|in dringende gevallen"
    r"|voor dringende zaken|beperkte? toegang|n[äa]r jag (?:[äa]r|kommer) tillbaka"
    r"|(?:vid|i) br[åa]dskande [äa]renden|begr[äa]nsad tillg[åa]ng"
    r"|n[åa]r jeg (?:er|kommer) tilba(?:ke|ge)|ved hastesaker|i hastende tilf[æa]lde"
    r"|begrenset tilgang|begr[æa]nset adgang|palattuani|kiireellisiss[äa] asioissa"
    r"|rajoitetusti|po (?:moim )?powrocie|w pilnych sprawach|ograniczony dost[ęe]p"
    r"|急ぎの|緊急の|戻り次第|以降に(?:ご)?(?:返信|連絡|対応)|返信いたします|対応いたします"
    r"|(?:for )?anything urgent|по срочным|в случае срочн|обращайтесь к|после возвращения"
    r"|acil durumlarda|acil (?:konular|i[şs]ler)|d[öo]n[üu][şs][üu]mde"
    r"|v nal[ée]hav[ýy]ch p[řr][íi]padech|po (?:m[ée]m )?n[áa]vratu|s[üu]rg[őo]s [üu]gyekben"
    r"|visszat[ée]r[ée]sem ut[áa]n|pentru urgen[țt]e|la [îi]ntoarcere|για επείγοντα"  # noqa: RUF001 - foreign-language wording
    r"|κατά την επιστροφή|μόλις επιστρέψω|如有急事|紧急事项|緊急事項|返回后|回来后"
    r"|급한 (?:용무|일|사항)|복귀 후",
    re.IGNORECASE,
)


def is_auto_reply(msg: Message, subject: str, new_text: str, quotes_history: bool) -> bool:
    """True if ``msg`` is an automatic reply (see module docstring for the signals).

    ``quotes_history``: the body quotes an earlier message. Absence wording in
    a body counts only without it: people write "I'm away next week" in real
    replies, which quote what they answer; out-of-office notices rarely do.
    """
    headers = {k.lower(): str(v).strip().lower() for k, v in msg.items()}
    auto_submitted = headers.get("auto-submitted", "")
    if auto_submitted.startswith("auto-replied"):
        return True
    if "x-autoreply" in headers or "x-autorespond" in headers or "x-autoreply-from" in headers:
        return headers.get("x-autoreply", "yes") not in ("no", "false", "0")
    if headers.get("precedence", "") in ("auto_reply", "auto-reply"):
        return True
    if "vacation" in headers.get("x-apple-action", ""):
        return True
    body_wording = not quotes_history and bool(_BODY.search(" ".join(new_text[:1500].split())))
    wording = bool(_SUBJECT.search(subject)) or body_wording
    if auto_submitted and auto_submitted != "no":
        answers = "in-reply-to" in headers or "references" in headers
        return wording or answers
    if wording and headers.get("precedence", "") in ("bulk", "junk", "list"):
        return True
    # No header at all: the subject alone, or an absence notice short enough to be one.
    if _SUBJECT.search(subject):
        return True
    if not body_wording or len(new_text) >= 1500:
        return False
    # "I'm out of the office until Monday, but yes - Tuesday at 10" is a person
    # answering: under a "Re:" subject, a notice must also say what happens to
    # the message meanwhile (read on return, urgent matters to a colleague ...).
    return not REPLY_PREFIX.match(subject) or bool(
        _NOTICE_DETAIL.search(" ".join(new_text[:1500].split()))
    )


def mentions_absence(subject: str, new_text: str) -> bool:
    """True if the subject or the new text says someone is away (any language read here)."""
    return bool(_SUBJECT.search(subject) or _BODY.search(" ".join(new_text[:1500].split())))
