#!/usr/bin/env python3
"""Drives headless Chromium (Debian's chromium and chromium-driver, through
python3-selenium) through the self-service page of `imapstage serve`: opens
the invitation link, sends a wrong password (the page must show the error),
then the right one, follows the status page (it refreshes itself) until the
job ends, and opens the link again (it must be refused). Saves a screenshot
of every step in SHOTS_DIR and prints what it saw as one JSON object.

Usage: web_browser.py LINK WRONG_PASSWORD_FILE RIGHT_PASSWORD_FILE SHOTS_DIR
(the passwords come from files, not from the command line)."""
import json
import os
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait


def text_of(driver, element_id):
    """The text of the element once it is on the page (up to 30 s), or None."""
    try:
        return WebDriverWait(driver, 30).until(
            expected_conditions.presence_of_element_located((By.ID, element_id))).text
    except WebDriverException:
        return None


def main():
    link, wrong_file, right_file, shots = sys.argv[1:5]
    wrong = open(wrong_file).read().rstrip("\n")
    right = open(right_file).read().rstrip("\n")
    os.makedirs(shots, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="imapstage-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1000,800", "--user-data-dir=" + profile):
        options.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    seen = {}

    def shot(name):
        driver.save_screenshot(os.path.join(shots, name + ".png"))

    try:
        driver.get(link)
        seen["form_user"] = text_of(driver, "user")
        shot("1-form")
        driver.find_element(By.ID, "password").send_keys(wrong)
        driver.find_element(By.ID, "submit").click()
        seen["wrong_error"] = text_of(driver, "error")
        seen["wrong_field_empty"] = text_of(driver, "password") is not None and \
            driver.find_element(By.ID, "password").get_attribute("value") == ""
        shot("2-wrong-password")
        driver.find_element(By.ID, "password").send_keys(right)
        driver.find_element(By.ID, "submit").click()
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
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
