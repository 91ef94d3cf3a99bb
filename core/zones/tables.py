"""The compact tables `core.zones.inference` reads: countries, their calling codes and
domains, and the states that decide the zone in countries spanning several.

One line per country: ISO code, zone (for a country with several zones, its most
populous one, marked `~`: an answer from it alone is "guessed"), E.164 calling
code, then other names the country goes by in a CRM's free-text Country field.
Territories sharing a calling code with a bigger country (+1, +7, +44 ...) take
that country's line only. Data as of the IANA tz database 2026; kept small on
purpose: a country missing here falls back to the sequence's default zone.
"""

from __future__ import annotations

COUNTRIES = """
US ~America/New_York 1 united states|usa|united states of america|u.s.|u.s.a.|america
CA ~America/Toronto - canada
MX ~America/Mexico_City 52 mexico|méxico
BR ~America/Sao_Paulo 55 brazil|brasil
AR America/Argentina/Buenos_Aires 54 argentina
CL America/Santiago 56 chile
CO America/Bogota 57 colombia
PE America/Lima 51 peru|perú
VE America/Caracas 58 venezuela
EC America/Guayaquil 593 ecuador
UY America/Montevideo 598 uruguay
PY America/Asuncion 595 paraguay
BO America/La_Paz 591 bolivia
CR America/Costa_Rica 506 costa rica
PA America/Panama 507 panama
GT America/Guatemala 502 guatemala
DO America/Santo_Domingo - dominican republic
GB Europe/London 44 united kingdom|uk|great britain|england|scotland|wales|northern ireland
IE Europe/Dublin 353 ireland|éire
DE Europe/Berlin 49 germany|deutschland
AT Europe/Vienna 43 austria|österreich
CH Europe/Zurich 41 switzerland|schweiz|suisse|svizzera
FR Europe/Paris 33 france
BE Europe/Brussels 32 belgium|belgique|belgië
NL Europe/Amsterdam 31 netherlands|the netherlands|holland|nederland
LU Europe/Luxembourg 352 luxembourg
ES ~Europe/Madrid 34 spain|españa
PT ~Europe/Lisbon 351 portugal
IT Europe/Rome 39 italy|italia
DK Europe/Copenhagen 45 denmark|danmark
NO Europe/Oslo 47 norway|norge
SE Europe/Stockholm 46 sweden|sverige
FI Europe/Helsinki 358 finland|suomi
IS Atlantic/Reykjavik 354 iceland|ísland
PL Europe/Warsaw 48 poland|polska
CZ Europe/Prague 420 czech republic|czechia|česko
SK Europe/Bratislava 421 slovakia|slovensko
HU Europe/Budapest 36 hungary|magyarország
RO Europe/Bucharest 40 romania|românia
BG Europe/Sofia 359 bulgaria
GR Europe/Athens 30 greece|hellas
HR Europe/Zagreb 385 croatia|hrvatska
SI Europe/Ljubljana 386 slovenia|slovenija
RS Europe/Belgrade 381 serbia|srbija
EE Europe/Tallinn 372 estonia|eesti
LV Europe/Riga 371 latvia|latvija
LT Europe/Vilnius 370 lithuania|lietuva
UA Europe/Kyiv 380 ukraine
TR Europe/Istanbul 90 turkey|türkiye|turkiye
CY Asia/Nicosia 357 cyprus
MT Europe/Malta 356 malta
RU ~Europe/Moscow 7 russia|russian federation|россия
IL Asia/Jerusalem 972 israel
AE Asia/Dubai 971 united arab emirates|uae
SA Asia/Riyadh 966 saudi arabia
QA Asia/Qatar 974 qatar
EG Africa/Cairo 20 egypt
MA Africa/Casablanca 212 morocco
NG Africa/Lagos 234 nigeria
KE Africa/Nairobi 254 kenya
ZA Africa/Johannesburg 27 south africa
IN Asia/Kolkata 91 india
PK Asia/Karachi 92 pakistan
BD Asia/Dhaka 880 bangladesh
LK Asia/Colombo 94 sri lanka
CN Asia/Shanghai 86 china|prc|people's republic of china
HK Asia/Hong_Kong 852 hong kong
TW Asia/Taipei 886 taiwan
JP Asia/Tokyo 81 japan|日本
KR Asia/Seoul 82 south korea|korea|republic of korea
SG Asia/Singapore 65 singapore
MY Asia/Kuala_Lumpur 60 malaysia
TH Asia/Bangkok 66 thailand
VN Asia/Ho_Chi_Minh 84 vietnam|viet nam
PH Asia/Manila 63 philippines
ID ~Asia/Jakarta 62 indonesia
AU ~Australia/Sydney 61 australia
NZ Pacific/Auckland 64 new zealand|aotearoa
"""

# Where the state (province, region) decides the zone. "code|name|other name zone".
STATES: dict[str, str] = {
    "US": """
AL|alabama America/Chicago
AK|alaska America/Anchorage
AZ|arizona America/Phoenix
AR|arkansas America/Chicago
CA|california America/Los_Angeles
CO|colorado America/Denver
CT|connecticut America/New_York
DE|delaware America/New_York
DC|district of columbia|washington dc America/New_York
FL|florida America/New_York
GA|georgia America/New_York
HI|hawaii Pacific/Honolulu
ID|idaho America/Boise
IL|illinois America/Chicago
IN|indiana America/Indiana/Indianapolis
IA|iowa America/Chicago
KS|kansas America/Chicago
KY|kentucky America/New_York
LA|louisiana America/Chicago
ME|maine America/New_York
MD|maryland America/New_York
MA|massachusetts America/New_York
MI|michigan America/Detroit
MN|minnesota America/Chicago
MS|mississippi America/Chicago
MO|missouri America/Chicago
MT|montana America/Denver
NE|nebraska America/Chicago
NV|nevada America/Los_Angeles
NH|new hampshire America/New_York
NJ|new jersey America/New_York
NM|new mexico America/Denver
NY|new york America/New_York
NC|north carolina America/New_York
ND|north dakota America/Chicago
OH|ohio America/New_York
OK|oklahoma America/Chicago
OR|oregon America/Los_Angeles
PA|pennsylvania America/New_York
RI|rhode island America/New_York
SC|south carolina America/New_York
SD|south dakota America/Chicago
TN|tennessee America/Chicago
TX|texas America/Chicago
UT|utah America/Denver
VT|vermont America/New_York
VA|virginia America/New_York
WA|washington America/Los_Angeles
WV|west virginia America/New_York
WI|wisconsin America/Chicago
WY|wyoming America/Denver
PR|puerto rico America/Puerto_Rico
""",
    "CA": """
AB|alberta America/Edmonton
BC|british columbia America/Vancouver
MB|manitoba America/Winnipeg
NB|new brunswick America/Moncton
NL|newfoundland and labrador|newfoundland America/St_Johns
NS|nova scotia America/Halifax
NT|northwest territories America/Yellowknife
NU|nunavut America/Iqaluit
ON|ontario America/Toronto
PE|prince edward island America/Halifax
QC|quebec|québec America/Toronto
SK|saskatchewan America/Regina
YT|yukon America/Whitehorse
""",
    "AU": """
ACT|australian capital territory Australia/Sydney
NSW|new south wales Australia/Sydney
NT|northern territory Australia/Darwin
QLD|queensland Australia/Brisbane
SA|south australia Australia/Adelaide
TAS|tasmania Australia/Hobart
VIC|victoria Australia/Melbourne
WA|western australia Australia/Perth
""",
    "BR": """
AC|acre America/Rio_Branco
AL|alagoas America/Maceio
AM|amazonas America/Manaus
AP|amapá|amapa America/Belem
BA|bahia America/Bahia
CE|ceará|ceara America/Fortaleza
DF|distrito federal America/Sao_Paulo
ES|espírito santo|espirito santo America/Sao_Paulo
GO|goiás|goias America/Sao_Paulo
MA|maranhão|maranhao America/Fortaleza
MG|minas gerais America/Sao_Paulo
MS|mato grosso do sul America/Campo_Grande
MT|mato grosso America/Cuiaba
PA|pará|para America/Belem
PB|paraíba|paraiba America/Fortaleza
PE|pernambuco America/Recife
PI|piauí|piaui America/Fortaleza
PR|paraná|parana America/Sao_Paulo
RJ|rio de janeiro America/Sao_Paulo
RN|rio grande do norte America/Fortaleza
RO|rondônia|rondonia America/Porto_Velho
RR|roraima America/Boa_Vista
RS|rio grande do sul America/Sao_Paulo
SC|santa catarina America/Sao_Paulo
SE|sergipe America/Maceio
SP|são paulo|sao paulo America/Sao_Paulo
TO|tocantins America/Araguaina
""",
    "MX": """
BC|BCN|baja california America/Tijuana
BCS|baja california sur America/Mazatlan
CHH|CHIH|chihuahua America/Chihuahua
SON|sonora America/Hermosillo
SIN|sinaloa America/Mazatlan
NAY|nayarit America/Mazatlan
ROO|QROO|quintana roo America/Cancun
NLE|NL|nuevo león|nuevo leon America/Monterrey
COA|COAH|coahuila America/Monterrey
TAM|TAMPS|tamaulipas America/Monterrey
CMX|CDMX|DF|ciudad de méxico|ciudad de mexico|mexico city America/Mexico_City
JAL|jalisco America/Mexico_City
""",
    "RU": """
MOW|moscow|москва Europe/Moscow
SPE|saint petersburg|st. petersburg|санкт-петербург Europe/Moscow
KGD|kaliningrad oblast|kaliningrad Europe/Kaliningrad
SAM|samara oblast|samara Europe/Samara
UD|udmurtia Europe/Samara
SVE|sverdlovsk oblast|yekaterinburg Asia/Yekaterinburg
CHE|chelyabinsk oblast|chelyabinsk Asia/Yekaterinburg
PER|perm krai|perm Asia/Yekaterinburg
BA|bashkortostan|ufa Asia/Yekaterinburg
TYU|tyumen oblast|tyumen Asia/Yekaterinburg
OMS|omsk oblast|omsk Asia/Omsk
NVS|novosibirsk oblast|novosibirsk Asia/Novosibirsk
TOM|tomsk oblast|tomsk Asia/Tomsk
KEM|kemerovo oblast|kemerovo Asia/Novokuznetsk
KYA|krasnoyarsk krai|krasnoyarsk Asia/Krasnoyarsk
IRK|irkutsk oblast|irkutsk Asia/Irkutsk
SA|sakha|yakutia Asia/Yakutsk
PRI|primorsky krai|vladivostok Asia/Vladivostok
KHA|khabarovsk krai|khabarovsk Asia/Vladivostok
SAK|sakhalin oblast|sakhalin Asia/Sakhalin
MAG|magadan oblast|magadan Asia/Magadan
KAM|kamchatka krai|kamchatka Asia/Kamchatka
""",
}

# Country-code domains used as generic ones: never a sign of where someone is.
_GENERIC = "ai io co me tv fm ly so gg to ws cc am la nu sh ac vc ms ag tk ml ga cf gq cx st bz"
GENERIC_CCTLDS = frozenset(_GENERIC.split(" "))
