"""Scrapy settings of the biocap-wiki project (``scrapy.cfg`` points here).

Defaults follow the MediaWiki API etiquette: one request at a time per host,
AutoThrottle on top, ``maxlag=5``, a User-Agent that names the tool and a
contact, gzip, retries that wait as long as the server asks, and an on-disk
HTTP cache so a re-run or a resumed job does not fetch a page twice.
Override any of them with ``-s NAME=VALUE`` (or ``--set`` in ``biocap-wiki crawl``).
"""

import os
from pathlib import Path

BOT_NAME = "biocap-wiki"
SPIDER_MODULES = ["biocap_wiki.spiders"]
NEWSPIDER_MODULE = "biocap_wiki.spiders"

# --- The wiki and what the spider asks of it -------------------------------------------------
WIKI_API = "https://en.wikipedia.org/w/api.php"
#: Contact for the User-Agent (an e-mail or a page); required against Wikimedia sites.
WIKI_CONTACT = os.environ.get("BIOCAP_WIKI_CONTACT", "")
WIKI_BATCH_SIZE = 50  # titles per action=query, the API's limit for ordinary clients
WIKI_MAXLAG = 5  # seconds of replication lag above which the API asks us to come back later
WIKI_SEARCH_LIMIT = 5  # search hits tried for a name that does not resolve (the original's srlimit)
WIKI_LICENSE = "CC BY-SA 4.0"  # licence of Wikipedia text, stored with every record

# --- robots.txt --------------------------------------------------------------------------------
# Obeyed, except for the Action API: en.wikipedia.org/robots.txt disallows /w/ for every
# crawler, which would drop every api.php request ("Forbidden by robots.txt"). That rule keeps
# crawlers off dynamic page views; API clients are governed by API:Etiquette and the
# User-Agent policy instead, which we follow (serial requests, batching, maxlag, contact).
# The spider exempts exactly its api.php requests with the ``dont_obey_robotstxt`` meta key,
# so anything else a future change fetches still goes through robots.txt.
ROBOTSTXT_OBEY = True

# --- Politeness ---------------------------------------------------------------------------------
CONCURRENT_REQUESTS_PER_DOMAIN = 1
# Also AutoThrottle's floor. Keep it above 0: with no delay at all, Scrapy can hand a slot
# several queued requests at once (they start before the first counts as transferring),
# so a concurrency of 1 is only kept when some delay applies.
DOWNLOAD_DELAY = 0.1
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
DOWNLOAD_TIMEOUT = 60
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False  # no listening ports
REMOTE_CONTROL_ENABLED = False

# --- Retries: 429/5xx and API maxlag, waiting for Retry-After or an exponential backoff --------
RETRY_ENABLED = True
RETRY_TIMES = 5
RETRY_HTTP_CODES = [429, 500, 502, 503, 504, 522, 524, 408]
RETRY_BACKOFF_BASE = 2.0
RETRY_BACKOFF_MAX = 120.0
RETRY_AFTER_MAX = 600.0
RETRY_API_ERROR_CODES = ["maxlag", "ratelimited"]
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "biocap_wiki.middlewares.RetryAfterMiddleware": 550,
}

# --- HTTP cache on disk: the user's cache folder (or --cache-dir, -s HTTPCACHE_DIR=...) ---------
# Absolute: Scrapy puts a relative HTTPCACHE_DIR under the project's .scrapy/, inside the checkout.
HTTPCACHE_ENABLED = True
HTTPCACHE_DIR = str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "biocap-wiki" / "httpcache"
)
HTTPCACHE_EXPIRATION_SECS = 30 * 24 * 3600
HTTPCACHE_POLICY = "biocap_wiki.middlewares.ApiCachePolicy"
HTTPCACHE_IGNORE_HTTP_CODES = RETRY_HTTP_CODES
HTTPCACHE_GZIP = True

FEED_EXPORT_ENCODING = "utf-8"
LOG_LEVEL = "INFO"

# --- A progress line on stderr (biocap-wiki crawl turns it on, and the log down to WARNING) -----
EXTENSIONS = {"biocap_wiki.extensions.Progress": 500}
WIKI_PROGRESS = False
WIKI_PROGRESS_INTERVAL = 5.0  # seconds
