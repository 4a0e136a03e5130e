"""The labelled set of bench/search_quality.py, written for this project.

30 support topics; each has five phrasings of the problem (two become sessions, two issues, one a
knowledge article), each phrasing appears under two customer contexts: 300 records. Each topic has
two queries that paraphrase it with other words (60 queries); every record of the topic is relevant.
Every issue carries an incident id (INC-4xxx) and every session an error code (E-xxxx): 20 identifier
queries ask for one of them and exactly that record is relevant.
"""

from __future__ import annotations

TOPICS: list[tuple[str, list[str], list[str]]] = [
    ("sso_login", [
        "User is stuck in a login loop after the SSO redirect",
        "After signing in through Okta the page bounces back to the login screen",
        "Single sign-on authentication keeps redirecting endlessly",
        "SAML assertion accepted but session is never established",
        "Troubleshooting identity provider sign-in redirects",
    ], ["customer cannot log in after single sign-on", "can't get into my account with our company identity provider"]),
    ("password_reset", [
        "Password reset email never arrives",
        "The forgot-password link is not being delivered to my inbox",
        "Reset password message missing, checked spam folder",
        "Recovery emails for credentials are not sent",
        "How to recover access when you forgot your password",
    ], ["I did not receive the mail to change my passcode", "credential recovery message not showing up"]),
    ("double_charge", [
        "I was billed twice for the same month",
        "Duplicate charge on my credit card for the subscription",
        "Customer charged two times for a single invoice",
        "Payment processed twice after plan renewal",
        "What to do when a payment is duplicated",
    ], ["refund for being charged double", "my card got debited two times"]),
    ("csv_export", [
        "Export to CSV produces an empty file",
        "Downloading the spreadsheet export gives zero rows",
        "CSV download is blank even though the table has data",
        "Data export file contains only headers",
        "Exporting reports to comma-separated files",
    ], ["the downloaded excel file has nothing in it", "table dump comes out empty"]),
    ("slow_dashboard", [
        "Dashboard takes over a minute to load",
        "The analytics page is extremely slow",
        "Charts render very slowly on the main overview",
        "Performance of the home screen degraded badly",
        "Speeding up dashboards with many widgets",
    ], ["the overview screen is sluggish and laggy", "home page loading forever"]),
    ("mobile_crash", [
        "The iOS app crashes on launch",
        "Android application closes immediately after opening",
        "Mobile app force quits when I tap the icon",
        "Phone app shuts down at startup after the update",
        "Known crashes of the mobile apps and fixes",
    ], ["iPhone application dies as soon as I start it", "the app on my smartphone keeps quitting"]),
    ("dark_mode", [
        "Please add a dark theme",
        "Feature request: night mode for the interface",
        "Would love a darker color scheme for late work",
        "Support a black background option in settings",
        "Appearance settings and themes",
    ], ["can you make the UI dim for the evening", "request for low-light display style"]),
    ("webhook_duplicates", [
        "Webhook deliveries arrive twice for every event",
        "We receive the same callback notification two times",
        "Duplicate webhook posts hit our endpoint",
        "Each event triggers repeated HTTP callbacks",
        "Handling retries and idempotency of webhooks",
    ], ["our server gets each push notification more than once", "event hooks are fired repeatedly"]),
    ("api_rate_limit", [
        "API returns 429 too many requests",
        "We are being throttled by the REST API",
        "Rate limit exceeded errors from the endpoints",
        "Integration gets blocked after a burst of calls",
        "API quotas and request limits explained",
    ], ["the service says we are sending requests too fast", "integration throttled by usage caps"]),
    ("cancel_subscription", [
        "How do I cancel my subscription",
        "I want to stop my plan and not be renewed",
        "Customer asks to terminate the contract",
        "Please end our account membership at the end of the term",
        "Cancelling or downgrading a plan",
    ], ["I'd like to quit the service and stop paying", "unsubscribe us from the paid tier"]),
    ("invoice_vat", [
        "Invoice PDF is missing the VAT number",
        "Our tax ID does not appear on the bill",
        "Need the VAT identifier printed on receipts",
        "Billing documents lack the company tax registration",
        "Adding tax details to invoices",
    ], ["the receipt does not show our european sales tax code", "fiscal number absent from the billing statement"]),
    ("invite_teammate", [
        "Cannot invite a colleague to the workspace",
        "Adding a new team member fails",
        "The invitation for my coworker shows an error",
        "New user invite button does nothing",
        "Inviting people to your organization",
    ], ["unable to add my coworker to our account", "onboarding another staff member doesn't work"]),
    ("permissions", [
        "Viewer role can still edit records",
        "Read-only users are able to change data",
        "Access control does not restrict guests",
        "Role-based permissions are not enforced",
        "Configuring roles and access rights",
    ], ["people who should only look can modify things", "guest accounts have too much privilege"]),
    ("slack_notifications", [
        "Slack notifications stopped arriving",
        "We no longer get alerts in our Slack channel",
        "The Slack integration is silent since yesterday",
        "Messages are not posted to Slack anymore",
        "Setting up Slack alerts",
    ], ["chat app alerts went quiet", "our team channel isn't receiving pings"]),
    ("timezone", [
        "Times are shown in the wrong time zone",
        "Timestamps are off by several hours",
        "Schedule displays UTC instead of my local time",
        "Dates shift by a day because of timezone conversion",
        "Time zone settings for users and workspaces",
    ], ["the clock in the app is hours behind", "hour offset on all dates"]),
    ("file_upload", [
        "Uploading attachments fails for large files",
        "Cannot attach a 30 MB PDF",
        "File upload stops at 99 percent",
        "Big documents are rejected when attaching",
        "Attachment size limits",
    ], ["sending a heavy document doesn't go through", "adding big files to a ticket breaks"]),
    ("search_broken", [
        "Search returns no results for existing items",
        "Looking up a customer by name finds nothing",
        "The find box does not return records I know exist",
        "Search index seems out of date",
        "How search indexing works",
    ], ["the lookup feature can't locate anything", "query bar shows empty results"]),
    ("two_factor", [
        "Two-factor codes are rejected",
        "My 2FA authenticator code is always invalid",
        "Multi-factor verification fails even with a fresh code",
        "Second factor one-time passwords do not work",
        "Setting up two-step verification",
    ], ["the six digit security code from my phone is refused", "MFA token not accepted"]),
    ("data_deletion", [
        "Please delete all my personal data",
        "GDPR erasure request for our account",
        "Customer wants their information removed permanently",
        "Right to be forgotten request",
        "Data retention and deletion policy",
    ], ["wipe everything you store about me", "privacy request to erase user records"]),
    ("email_bounce", [
        "Outgoing emails to customers bounce",
        "Our notification mails are returned as undeliverable",
        "Messages sent from the platform end up rejected by recipients",
        "High bounce rate on transactional email",
        "Email deliverability and DNS records",
    ], ["mails we send come back as failed", "recipients never get our messages and we get delivery failure notices"]),
    ("calendar_sync", [
        "Google Calendar events are not syncing",
        "Meetings from Outlook do not show up",
        "Calendar integration stopped updating appointments",
        "Scheduled events are missing after sync",
        "Connecting your calendar",
    ], ["my appointments don't appear in the app", "agenda is out of date compared to google"]),
    ("pricing_question", [
        "What does the enterprise plan cost",
        "Need a quote for 200 seats",
        "Pricing for larger teams",
        "How much is the annual business tier",
        "Plans and pricing overview",
    ], ["how expensive is it for a big company", "price list for volume licenses"]),
    ("report_wrong_numbers", [
        "Revenue report shows incorrect totals",
        "Sums in the monthly report do not match our records",
        "The analytics numbers are wrong",
        "Metrics are double counted in the summary",
        "Understanding how report totals are computed",
    ], ["figures in the statistics are inaccurate", "the amounts in my summary are off"]),
    ("printing", [
        "Printing an invoice cuts off the last page",
        "Print preview is blank",
        "Printed documents are missing the footer",
        "Cannot print from the browser",
        "Printing tips",
    ], ["paper output is truncated", "hard copy doesn't come out right"]),
    ("language", [
        "Please translate the app into German",
        "Interface only available in English",
        "Add Spanish localization",
        "We need the product in French for our staff",
        "Supported languages",
    ], ["multilingual support for other countries", "can the ui be shown in another tongue"]),
    ("account_locked", [
        "My account is locked after too many attempts",
        "User blocked after failed passwords",
        "Locked out, the system says try again later",
        "Account suspended due to repeated wrong credentials",
        "Unlocking a locked account",
    ], ["I'm barred from signing in after guessing wrong", "access frozen because of bad tries"]),
    ("data_import", [
        "Importing contacts from a spreadsheet fails",
        "Bulk upload of customers shows an error",
        "The import wizard rejects my file",
        "Migrating records from our old CRM does not work",
        "Importing data",
    ], ["loading our customer list into the tool fails", "moving data over from the previous system breaks"]),
    ("notification_spam", [
        "Too many email notifications",
        "I get an alert for every tiny change",
        "Please let me turn off these reminder emails",
        "Notification overload, want a daily digest",
        "Managing notification preferences",
    ], ["stop flooding my inbox", "fewer alerts please, it's overwhelming"]),
    ("integration_token", [
        "The API key stopped working",
        "Access token expired and cannot be refreshed",
        "Our integration credentials are rejected as invalid",
        "Authentication to the API fails with 401",
        "Rotating API keys and tokens",
    ], ["our secret for the developer interface is refused", "unauthorized errors when calling endpoints"]),
    ("offline_mode", [
        "App does not work without internet",
        "Need offline access on the plane",
        "Content should be available when disconnected",
        "Working offline loses my changes",
        "Offline usage",
    ], ["using it with no connectivity", "no wifi and the application is useless"]),
]

CONTEXTS = [
    "Reported by a customer on the Pro plan from the Acme workspace.",
    "Raised by an enterprise admin during onboarding, urgent.",
]


def records() -> list[dict[str, str]]:
    """300 records: kind, topic, title, body, and an identifier that identifier queries ask for."""
    out: list[dict[str, str]] = []
    n = 0
    for topic, phrasings, _ in TOPICS:
        for p, text in enumerate(phrasings):
            kind = "session" if p < 2 else "issue" if p < 4 else "knowledge"
            for c, context in enumerate(CONTEXTS):
                n += 1
                ident = f"INC-{4000 + n * 7}" if kind == "issue" else f"E-{1000 + n * 13}" if kind == "session" else ""
                body = f"{text}. {context}" + (f" Reference {ident}." if ident else "")
                out.append({"kind": kind, "topic": topic, "title": text, "body": body, "ident": ident,
                            "key": f"{topic}-{p}-{c}"})
    return out


def queries() -> list[dict[str, object]]:
    """80 queries: 60 paraphrases (relevant: every record of the topic) and 20 identifiers."""
    recs = records()
    out: list[dict[str, object]] = []
    for topic, _, qs in TOPICS:
        rel = [r["key"] for r in recs if r["topic"] == topic]
        out.extend({"query": q, "relevant": rel, "type": "paraphrase"} for q in qs)
    idents = [r for r in recs if r["ident"]]
    for r in idents[:: max(1, len(idents) // 20)][:20]:
        out.append({"query": r["ident"], "relevant": [r["key"]], "type": "identifier"})
    return out
