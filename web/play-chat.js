// The player page's chat panel: the form that posts, the log that shows the table's `chat` events.
import { $, toast } from '/web/ui.js';

const MAX_LINES = 60;

/** Wire the chat form; returns the function that adds a `chat` event to the log. */
export function setupChat(client) {
  $('chat-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('chat-input');
    const text = input.value.trim();
    const c = client();
    if (!text || !c) return;
    input.value = '';
    c.chat(text).catch((err) => {
      toast(err.code === 'rate_limited' ? 'Chat: one message every two seconds, please.' : `Chat: ${err.message}`, 'error');
      if (!input.value) input.value = text;
    });
  });
  return (ev) => {
    const log = $('chat-log');
    const li = document.createElement('li');
    const mine = ev.user === client()?.user;
    li.dataset.mine = String(mine);
    li.innerHTML = '<span class="who"></span><span class="text"></span>';
    li.querySelector('.who').textContent = mine ? 'You' : shortUser(ev.user);
    li.querySelector('.text').textContent = ev.text;
    log.append(li);
    while (log.children.length > MAX_LINES) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  };
}

function shortUser(user) {
  return String(user).replace(/^player-/, 'Player ').slice(0, 24);
}
