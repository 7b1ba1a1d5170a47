#!/usr/bin/env python3
"""Drives headless Chromium (Debian's chromium and chromium-driver, through
python3-selenium) through the self-service page of `imapstage serve` for a
target where users have passwords of their own: opens the invitation link,
sends a wrong old password (the page must show the error), then the right old
one with a wrong new one (the new server's refusal shown), then both right,
follows the status page (it refreshes itself) until the job ends, and opens
the link again (it must be refused). Then logs in to the console with the
administrator token, finds the account listed, opens its job and downloads
its JSON and CSV reports (into SHOTS_DIR/downloads). Saves a screenshot of
every step in SHOTS_DIR and prints what it saw as one JSON object.

Usage: web_browser.py LINK WRONG_PASSWORD_FILE RIGHT_PASSWORD_FILE
       NEW_PASSWORD_FILE ADMIN_TOKEN_FILE SHOTS_DIR
(the passwords and the token come from files, not from the command line)."""
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait


def submit(driver):
    """Clicks the form's submit button and waits (up to 30 s) until the page
    it was on has been replaced, so that what is read next is the answer's."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(page))


def text_of(driver, element_id):
    """The text of the element once it is on the page (up to 30 s), or None."""
    try:
        return WebDriverWait(driver, 30).until(
            expected_conditions.presence_of_element_located((By.ID, element_id))).text
    except WebDriverException:
        return None


def downloaded(directory, name, timeout=30):
    """The content of DIRECTORY/NAME once the browser has finished writing it."""
    path = os.path.join(directory, name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and not os.path.exists(path + ".crdownload"):
            with open(path, encoding="utf-8") as f:
                return f.read()
        time.sleep(0.2)
    return None


def main():
    link, wrong_file, right_file, new_file, token_file, shots = sys.argv[1:7]
    wrong = open(wrong_file).read().rstrip("\n")
    right = open(right_file).read().rstrip("\n")
    new = open(new_file).read().rstrip("\n")
    token = open(token_file).read().splitlines()[0]
    os.makedirs(shots, exist_ok=True)
    downloads = os.path.join(shots, "downloads")
    os.makedirs(downloads, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="imapstage-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1000,800", "--user-data-dir=" + profile):
        options.add_argument(a)
    options.add_experimental_option("prefs", {"download.default_directory": downloads,
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    seen = {}

    def shot(name):
        driver.save_screenshot(os.path.join(shots, name + ".png"))

    try:
        driver.get(link)
        seen["form_user"] = text_of(driver, "user")
        shot("1-form")
        seen["asks_new_password"] = len(driver.find_elements(By.ID, "new_password")) == 1
        driver.find_element(By.ID, "password").send_keys(wrong)
        driver.find_element(By.ID, "new_password").send_keys(new)
        submit(driver)
        seen["wrong_error"] = text_of(driver, "error")
        seen["wrong_field_empty"] = text_of(driver, "password") is not None and \
            driver.find_element(By.ID, "password").get_attribute("value") == "" and \
            driver.find_element(By.ID, "new_password").get_attribute("value") == ""
        shot("2-wrong-password")
        driver.find_element(By.ID, "password").send_keys(right)
        driver.find_element(By.ID, "new_password").send_keys(wrong)
        submit(driver)
        seen["wrong_new_error"] = text_of(driver, "error")
        shot("2b-wrong-new-password")
        driver.find_element(By.ID, "password").send_keys(right)
        driver.find_element(By.ID, "new_password").send_keys(new)
        submit(driver)
        statuses = []
        deadline = time.time() + 150
        status = None
        while time.time() < deadline:
            try:
                status = driver.find_element(By.ID, "status").get_attribute("data-status")
            except WebDriverException:
                status = None  # between two refreshes
            if status and (not statuses or statuses[-1] != status):
                statuses.append(status)
                shot("3-status-%d-%s" % (len(statuses), status))
            if status in ("done", "error", "cancelled"):
                break
            time.sleep(0.3)
        seen["statuses"] = statuses
        seen["verify"] = text_of(driver, "verify")
        seen["status_path"] = "/s/" in driver.current_url
        shot("4-done")
        driver.get(link)
        seen["reuse"] = text_of(driver, "refusal")
        shot("5-link-reused")

        # The console: log in, the account in the list, its job, its reports.
        base = urllib.parse.urlsplit(link)
        driver.get("%s://%s/admin/login" % (base.scheme, base.netloc))
        WebDriverWait(driver, 30).until(expected_conditions.presence_of_element_located((By.ID, "token")))
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "login").click()
        user = seen["form_user"]
        row = WebDriverWait(driver, 30).until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "tr.job[data-user='%s']" % user)))
        seen["console_status"] = row.get_attribute("data-status")
        shot("6-console")
        row.find_element(By.TAG_NAME, "a").click()
        report = WebDriverWait(driver, 30).until(expected_conditions.presence_of_element_located((By.ID, "report")))
        shot("7-job")
        # /admin/job/N.json downloads as job-N.json (Content-Disposition).
        job_file = "job-" + urllib.parse.urlsplit(report.get_attribute("href")).path.rsplit("/", 1)[1]
        report.click()
        text = downloaded(downloads, job_file)
        seen["report"] = json.loads(text) if text else None
        driver.find_element(By.ID, "report-csv").click()
        seen["report_csv"] = downloaded(downloads, job_file.replace(".json", ".csv"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
