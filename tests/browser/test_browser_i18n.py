"""The pages' languages (README, "Languages"): the widget, the visitor's page and the agents'
desk speak the browser's language when they have texts in it (English and Simplified Chinese),
and ?lang= (the widget's data-lang) overrides it. The tests also take the pictures of the
widget and the desk for the README (browser_helpers.SCREENSHOTS)."""

from __future__ import annotations

import pytest
from browser_helpers import screenshot, sign_in

DESK = {"enabled": "yes", "trial_agents": "agent1", "visitors": "anonymous"}


def desk_with_shop(make_daemon, shop):
    origin, page = shop()
    daemon = make_daemon(support={**DESK, "embed_origins": origin})
    page.widget_url = daemon.http_url("ws", "/widget.js")
    return daemon, origin, page


def open_desk(new_tab, daemon, **options):
    tab = new_tab(daemon.http_url("ws", "/agent"), **options)
    sign_in(tab, "agent1")
    return tab


def send(box, text: str) -> None:
    box.fill(text)
    box.press("Enter")


ENGLISH = {
    "locale": "en-US",
    "lang": "en",
    "button": "Chat with us",
    "online": "An agent is online",
    "placeholder": "Describe your question…",
    "send": "Send",
    "question": "Do you ship to Norway?",
    "answer": "We do: in three days, and free from 40 €.",
    "picture": "widget",
}
CHINESE = {
    "locale": "zh-CN",
    "lang": "zh-CN",
    "button": "在线客服",
    "online": "客服在线",
    "placeholder": "请描述您的问题…",
    "send": "发送",
    "question": "你们能寄到上海吗？",
    "answer": "可以的，一般三天内送达，满 200 元包邮。",
    "picture": "widget-zh",
}


@pytest.mark.parametrize("words", [ENGLISH, CHINESE], ids=lambda words: words["locale"])
def test_the_widget_speaks_the_browsers_language(make_daemon, shop, new_tab, expect, words):
    daemon, origin, _page = desk_with_shop(make_daemon, shop)
    agent = open_desk(new_tab, daemon)
    visitor = new_tab(origin + "/teapots", width=1000, height=720, locale=words["locale"])
    button = visitor.page.locator("button[data-chatd-widget=button]")
    expect(button).to_have_text(words["button"])
    button.click()
    chat = visitor.page.frame_locator("iframe[data-chatd-widget=frame]")
    expect(chat.locator("html")).to_have_attribute("lang", words["lang"])
    expect(chat.locator("#agents-online")).to_have_text(words["online"])
    expect(chat.locator("#text")).to_have_attribute("placeholder", words["placeholder"])
    expect(chat.locator("#composer [type=submit]")).to_have_text(words["send"])

    send(chat.locator("#text"), words["question"])
    agent.page.locator(".queue-item").click()
    send(agent.page.get_by_label("Reply", exact=True), words["answer"])
    messages = chat.locator(".events:not(.pending) .message .text")
    expect(messages).to_have_text([words["question"], words["answer"]])
    expect(chat.locator(".seen")).to_be_visible()
    visitor.page.locator("h1").click()  # the composer without the caret, for the picture
    screenshot(visitor, words["picture"])


def test_lang_in_the_address_and_data_lang_override_an_english_browser(
    make_daemon, shop, new_tab, expect
):
    daemon, origin, page = desk_with_shop(make_daemon, shop)
    support = new_tab(daemon.http_url("ws", "/support?lang=zh-CN"))
    expect(support.page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(support.page.locator("#login h1")).to_have_text("联系我们的客服")
    expect(support.page.locator("#login [type=submit]")).to_have_text("开始咨询")

    chat = new_tab(daemon.http_url("ws", "/?lang=zh"))
    expect(chat.page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(chat.page.locator("#login h1")).to_have_text("欢迎使用 chatd")

    english = new_tab(daemon.http_url("ws", "/support"))
    expect(english.page.locator("html")).to_have_attribute("lang", "en")
    expect(english.page.locator("#login h1")).to_have_text("Chat with our support team")

    page.attributes = {"data-lang": "zh-CN"}
    visitor = new_tab(origin + "/")
    button = visitor.page.locator("button[data-chatd-widget=button]")
    expect(button).to_have_text("在线客服")
    button.click()
    chat = visitor.page.frame_locator("iframe[data-chatd-widget=frame]")
    expect(chat.locator("#agents-online")).to_have_text("暂时没有客服在线——请留言，我们会尽快回复")
    expect(visitor.page.get_by_role("button", name="关闭对话窗口")).to_be_visible()


def test_the_desk_speaks_chinese_to_a_chinese_browser(make_daemon, new_tab, expect):
    daemon = make_daemon(support=DESK)
    agent = open_desk(new_tab, daemon, locale="zh-CN")
    page = agent.page
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#status")).to_have_text("已连接")
    expect(page.locator("label[for=queue-filter]")).to_have_text("显示")
    expect(page.locator("#queue-filter option")).to_have_text(["全部", "进行中", "已解决"])
    expect(page.locator("label[for=queue-view]")).to_have_text("分配")
    expect(page.locator("#queue-view option")).to_have_text(["全部", "我的", "未分配"])
    expect(page.locator("#queue-empty")).to_have_text("暂无对话。")
    page.locator("#queue-view").select_option("mine")
    expect(page.locator("#queue-empty")).to_have_text("没有分配给您的对话。")
    expect(page.locator("#text")).to_have_attribute("placeholder", "请选择一个对话")


def test_the_desk_with_a_queue_an_assigned_conversation_and_a_note(make_daemon, new_tab, expect):
    """The README's picture of the desk."""
    daemon = make_daemon(support=DESK)
    agent = open_desk(new_tab, daemon)
    questions = {
        "alice": "Hello! My order 1042 has not arrived yet. Can you check where it is?",
        "bob": "Do you have the cast-iron teapot in blue?",
        "carol": "Can I change the delivery address of my order?",
    }
    for name, question in questions.items():
        customer = new_tab(daemon.http_url("ws", "/support"))
        sign_in(customer, name)
        send(customer.page.get_by_label("Message to support", exact=True), question)
        expect(agent.page.locator(".queue-item", has_text=question)).to_be_visible()

    item = agent.page.locator(".queue-entry", has_text="alice")
    item.get_by_role("button", name="Claim").click()
    expect(item.locator(".assignee")).to_have_text("You")
    item.locator(".queue-item").click()
    reply = agent.page.get_by_label("Reply", exact=True)
    send(reply, "Hi Alice, let me look that up for you.")
    agent.page.locator("#note-mode").click()
    send(reply, "Carrier says the parcel is held at the depot: call them if no news by Friday.")
    expect(agent.page.locator(".message.note .text")).to_have_count(1)
    agent.page.locator("#note-mode").click()
    reply.fill("It is at the local depot: it should reach you tomorrow.")
    screenshot(agent, "desk")
